import { describe, expect, it } from 'vitest';
import { FakeVllmConfigError } from './errors.js';
import { FaultInjector, parseFaultHeader, resolveFaultProfile } from './faults.js';

describe('fault specifications', () => {
  it('parses a header with parameters', () => {
    expect(parseFaultHeader('stall; after_tokens=3; ms=250; action=close')).toEqual({
      name: 'stall',
      params: { after_tokens: '3', ms: '250', action: 'close' },
    });
  });

  it('rejects unknown faults and parameters with the valid choices', () => {
    expect(() => parseFaultHeader('reset-everything')).toThrow(/reset-before-response/);
    expect(() => parseFaultHeader('stall; afterTokens=3')).toThrow(FakeVllmConfigError);
    expect(() => resolveFaultProfile({ 'status-503': 2 })).toThrow(/within 0..1/);
    expect(() => resolveFaultProfile('nope')).toThrow(/chaos/);
  });

  it('fires `first` N times, then follows the rate', () => {
    const injector = new FaultInjector({ 'status-503': { first: 2 } }, 1);
    expect(injector.rollRequest()?.name).toBe('status-503');
    expect(injector.rollRequest()?.name).toBe('status-503');
    for (let index = 0; index < 100; index++) expect(injector.rollRequest()).toBeUndefined();
  });

  it('fires at about its rate', () => {
    const injector = new FaultInjector({ 'status-429': 0.25 }, 9);
    let fired = 0;
    for (let index = 0; index < 4000; index++) if (injector.rollRequest()) fired++;
    expect(fired).toBeGreaterThan(850);
    expect(fired).toBeLessThan(1150);
  });
});
