import { describe, expect, it } from 'vitest';
import { InvalidOptionsError } from '../errors.js';
import { EngineCapacity, type EngineLoadSample, resolveAdaptiveCapOptions } from './engine-capacity.js';

const options = (overrides = {}) => resolveAdaptiveCapOptions({ initialCap: 8, headroom: 0.05, ...overrides }, 512)!;
const sample = (running: number, waiting: number, extra: Partial<EngineLoadSample> = {}): EngineLoadSample => ({
  running,
  waiting,
  kvCacheUsage: undefined,
  counter: undefined,
  ...extra,
});

/**
 * An engine with `slots` running slots fed by a client that keeps `cap` requests on it (demand never runs out):
 * what the engine's gauges would say. Returns the caps the learner set, one per poll.
 */
function drive(capacity: EngineCapacity, slotsPerPoll: number[]): number[] {
  return slotsPerPoll.map((slots) => {
    const outstanding = capacity.cap;
    capacity.observe(sample(Math.min(slots, outstanding), Math.max(0, outstanding - slots)), outstanding);
    return capacity.cap;
  });
}

describe('the learned per-engine cap', () => {
  it('starts at exactly initialCap, however small, and is back there after a restart', () => {
    for (const initialCap of [1, 2, 3, 8, 32]) {
      const capacity = new EngineCapacity(options({ initialCap }), 512);
      // Before, the cap was derived from a floored starting capacity plus at least one of headroom: 1 gave 2.
      expect(capacity.cap, `initialCap ${initialCap}`).toBe(initialCap);
      drive(capacity, [100, 100]);
      expect(capacity.cap).toBeGreaterThan(initialCap);
      capacity.unreachable();
      expect(capacity.cap, `initialCap ${initialCap} after a restart`).toBe(initialCap);
    }
  });

  it('starts at initialCap, doubles while everything it sends runs, and settles at the slots plus headroom', () => {
    const capacity = new EngineCapacity(options(), 512);
    expect(capacity.cap).toBe(8);
    expect(drive(capacity, Array(8).fill(100))).toEqual([15, 30, 59, 118, 105, 105, 105, 105]);
    expect(capacity.capacity).toBe(100);
    expect(capacity.state).toBe('learned');
  });

  it('follows the engine down and up: fewer slots at once, more by the headroom per poll', () => {
    const capacity = new EngineCapacity(options(), 512);
    drive(capacity, Array(8).fill(100));
    expect(drive(capacity, [60, 60])).toEqual([63, 63]);
    const grown = drive(capacity, Array(20).fill(80));
    expect(grown.at(-1)).toBe(84);
    expect(capacity.capacity).toBe(80);
  });

  it('an engine that restarted (its counter went backwards, or it refused a connection) is learned again', () => {
    const capacity = new EngineCapacity(options(), 512);
    capacity.observe(sample(4, 4, { counter: 1000 }), 8);
    expect(capacity.cap).toBe(5);
    capacity.observe(sample(2, 0, { counter: 10 }), 5);
    expect(capacity.restarts).toBe(1);
    expect(capacity.state).toBe('learning');
    expect(capacity.cap).toBe(8);
    capacity.observe(sample(4, 4), 8);
    capacity.unreachable();
    expect(capacity.restarts).toBe(2);
    expect(capacity.cap).toBe(8);
  });

  it('relearns after a restart by doubling up to the capacity it had, not past it', () => {
    const capacity = new EngineCapacity(options(), 512);
    drive(capacity, Array(8).fill(100));
    capacity.unreachable();
    expect(capacity.cap).toBe(8);
    // Back with the same 100 slots: no doubling to 118 this time.
    expect(drive(capacity, Array(6).fill(100))).toEqual([15, 30, 59, 105, 105, 105]);
    // Back with more slots than before: past the old capacity it grows by what ran.
    capacity.unreachable();
    const grown = drive(capacity, Array(30).fill(150));
    expect(Math.max(...grown)).toBeLessThanOrEqual(158);
    expect(grown.at(-1)).toBe(158);
  });

  it("counts this client's share: other clients' requests and n > 1 choices do not inflate the cap", () => {
    const capacity = new EngineCapacity(options(), 512);
    // 64 running, 64 waiting, of which this client holds half: its share of the running batch is 32.
    capacity.observe(sample(64, 64), 64);
    expect(capacity.capacity).toBe(32);
  });

  it('a full KV cache is full even with nobody waiting; an engine without gauges keeps the fixed cap', () => {
    const capacity = new EngineCapacity(options(), 512);
    capacity.observe(sample(8, 0, { kvCacheUsage: 0.97 }), 8);
    expect(capacity.state).toBe('learned');
    expect(capacity.capacity).toBe(8);
    capacity.noMetrics();
    expect(capacity.cap).toBe(512);
  });

  it('a paused engine (waiting, none running) and an idle client teach nothing', () => {
    const capacity = new EngineCapacity(options(), 512);
    capacity.observe(sample(0, 30), 30);
    capacity.observe(sample(5, 0), 0);
    expect(capacity.cap).toBe(8);
    expect(capacity.state).toBe('learning');
  });

  it('bad options are typed errors naming the field', () => {
    expect(() => resolveAdaptiveCapOptions({ initialCap: 0 }, undefined)).toThrow(InvalidOptionsError);
    expect(() => resolveAdaptiveCapOptions({ headroom: 2 }, undefined)).toThrow(/adaptive\.headroom/);
    expect(() => resolveAdaptiveCapOptions({ initialCap: 600 }, 512)).toThrow(/initialCap/);
    expect(() => resolveAdaptiveCapOptions('yes' as never, undefined)).toThrow(/adaptive/);
    expect(resolveAdaptiveCapOptions(true, 300)?.maxCap).toBe(300);
    expect(resolveAdaptiveCapOptions(true, 8)?.initialCap).toBe(8);
    expect(resolveAdaptiveCapOptions(undefined, 300)).toBeUndefined();
  });
});
