import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FakeVllmConfigError } from './errors.js';
import { FaultInjector, parseFaultHeader, parseFaultProfile, resolveFaultProfile } from './faults.js';

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

  it('parses a profile as users write it: a name, JSON or @file, naming the flag when it is wrong', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'fault-profile-')), 'profile.json');
    writeFileSync(file, '{"status-503":0.5}');
    expect(parseFaultProfile('chaos', '`--faults`')).toBe('chaos');
    expect(parseFaultProfile('{"stall":1}', '`--faults`')).toEqual({ stall: 1 });
    expect(parseFaultProfile(`@${file}`, '`--faults`')).toEqual({ 'status-503': 0.5 });
    expect(() => parseFaultProfile('@/nonexistent/profile.json', '`--faults`')).toThrow(/`--faults` to be .*@file/);
    expect(() => parseFaultProfile('{"x":', '`--faults`')).toThrow(FakeVllmConfigError);
    expect(() => parseFaultProfile('bogus', '`--faults`')).toThrow(/Invalid `--faults`: .*got `bogus`/);
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
