import { describe, expect, it } from 'vitest';
import {
  type EngineView,
  LeastOutstandingPolicy,
  PowerOfTwoPolicy,
  RoundRobinPolicy,
  SessionAffinityPolicy,
} from './policies.js';

const engines = (outstanding: number[]): EngineView[] =>
  outstanding.map((count, index) => ({ endpoint: `http://e${index}`, outstanding: count, index }));

describe('routing policies', () => {
  it('round robin visits each engine in turn', () => {
    const policy = new RoundRobinPolicy();
    const list = engines([0, 0, 0]);
    expect(Array.from({ length: 6 }, () => policy.pick(list).index)).toEqual([0, 1, 2, 0, 1, 2]);
  });

  it('least outstanding picks the least loaded', () => {
    expect(new LeastOutstandingPolicy().pick(engines([5, 1, 3])).index).toBe(1);
  });

  it('power of two never picks the most loaded of two', () => {
    const policy = new PowerOfTwoPolicy();
    for (let index = 0; index < 100; index++) expect(policy.pick(engines([0, 100])).index).toBe(0);
  });

  it('session affinity keeps a session on one engine and spreads sessions', () => {
    const policy = new SessionAffinityPolicy();
    const list = engines([0, 0, 0, 0]);
    const first = policy.pick(list, { sessionId: 'rollout-42' }).endpoint;
    for (let turn = 0; turn < 10; turn++) expect(policy.pick(list, { sessionId: 'rollout-42' }).endpoint).toBe(first);
    const used = new Set(
      Array.from({ length: 200 }, (_, index) => policy.pick(list, { sessionId: `s${index}` }).endpoint),
    );
    expect(used.size).toBe(4);
  });

  it('session affinity moves only the sessions of a removed engine', () => {
    const policy = new SessionAffinityPolicy();
    const four = engines([0, 0, 0, 0]);
    const three = four.slice(0, 3);
    const sessions = Array.from({ length: 300 }, (_, index) => `s${index}`);
    const before = sessions.map((session) => policy.pick(four, { sessionId: session }).endpoint);
    const after = sessions.map((session) => policy.pick(three, { sessionId: session }).endpoint);
    sessions.forEach((_, index) => {
      if (before[index] !== 'http://e3') expect(after[index]).toBe(before[index]);
    });
  });

  it('session affinity bounds load: an overloaded home engine spills over', () => {
    const policy = new SessionAffinityPolicy(1.25);
    const home = policy.pick(engines([0, 0]), { sessionId: 'hot' }).index;
    const loaded = engines(home === 0 ? [100, 0] : [0, 100]);
    expect(policy.pick(loaded, { sessionId: 'hot' }).index).toBe(1 - home);
  });

  it('a session follows the engine it last ran on, and prefers it while it is up', () => {
    const policy = new SessionAffinityPolicy({ maxWaitMs: 700 });
    const all = engines([0, 0, 0]);
    const first = policy.pick(all, { sessionId: 'agent-1' });
    // Its engine is full: the scheduler offers only the others, and the session spills to one of them.
    const spilled = policy.pick(
      all.filter((engine) => engine.endpoint !== first.endpoint),
      { sessionId: 'agent-1' },
    );
    expect(spilled.endpoint).not.toBe(first.endpoint);
    // Its prefix is now there: that is where it prefers to wait, and where it goes next.
    expect(policy.preferred(all, { sessionId: 'agent-1' })).toEqual({ engine: spilled, maxWaitMs: 700 });
    expect(policy.pick(all, { sessionId: 'agent-1' }).endpoint).toBe(spilled.endpoint);
    expect(policy.preferred(all, { sessionId: 'never-seen' })).toBeUndefined();
    expect(new SessionAffinityPolicy({ maxWaitMs: 0 }).preferred(all, { sessionId: 'agent-1' })).toBeUndefined();
  });

  it('with learned caps a session keeps an engine that has room, however loaded against the others', () => {
    const policy = new SessionAffinityPolicy(1.25);
    const home = policy.pick(engines([0, 0]), { sessionId: 'hot' }).index;
    const loaded = engines(home === 0 ? [100, 0] : [0, 100]).map((engine) => ({ ...engine, capIsLearned: true }));
    expect(policy.pick(loaded, { sessionId: 'hot' }).index).toBe(home);
  });

  it('remembers at most maxSessions sessions', () => {
    const policy = new SessionAffinityPolicy({ maxSessions: 2 });
    const all = engines([0, 0, 0, 0]);
    for (const session of ['a', 'b', 'c']) policy.pick(all, { sessionId: session });
    expect(policy.preferred(all, { sessionId: 'a' })).toBeUndefined();
    expect(policy.preferred(all, { sessionId: 'c' })).toBeDefined();
  });
});
