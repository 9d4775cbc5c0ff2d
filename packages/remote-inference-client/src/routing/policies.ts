import { InvalidOptionsError } from '../errors.js';

/** What a policy sees of one engine. */
export interface EngineView {
  readonly endpoint: string;
  /** Requests sent to this engine and not finished. */
  readonly outstanding: number;
  /** Position in the client's engine list. */
  readonly index: number;
  /**
   * True when the engine's cap follows what it can run (`limits.perEngine.adaptive`): the cap itself then bounds
   * its load, and a policy need not spread load further.
   */
  readonly capIsLearned?: boolean;
}

/** Per-request routing input. */
export interface RoutingContext {
  /** Multi-turn session: requests with the same id should reach the same engine (prefix-cache hits). */
  sessionId?: string | undefined;
}

/** The engine a request would rather wait for than go elsewhere, and for how long at most. */
export interface RoutingPreference {
  engine: EngineView;
  /** Counted from when the request started waiting for admission. */
  maxWaitMs: number;
}

/** Picks an engine among the available ones. Implement it to plug in your own routing. */
export interface RoutingPolicy {
  readonly name: string;
  /**
   * `engines` is non-empty and holds only engines that may take a request now. Both arguments are valid only during
   * the call: the scheduler reuses them for the next request.
   */
  pick(engines: readonly EngineView[], context: RoutingContext): EngineView;
  /**
   * Optional: an engine this request should wait for when it is full (its session's prefix cache is there), for at
   * most `maxWaitMs`; meanwhile requests behind it may take other engines. `engines` holds every engine that is up,
   * full or not. Undefined: no preference, the request goes wherever {@link pick} sends it.
   */
  preferred?(engines: readonly EngineView[], context: RoutingContext): RoutingPreference | undefined;
}

/** Names of the built-in policies. */
export type RoutingPolicyName = 'round-robin' | 'least-outstanding' | 'power-of-two' | 'session-affinity';

/** Each engine in turn. */
export class RoundRobinPolicy implements RoutingPolicy {
  readonly name = 'round-robin';
  private next = 0;
  pick(engines: readonly EngineView[]): EngineView {
    return engines[this.next++ % engines.length]!;
  }
}

/** The engine with the fewest outstanding requests; ties rotate so equal engines share load. */
export class LeastOutstandingPolicy implements RoutingPolicy {
  readonly name = 'least-outstanding';
  private rotation = 0;
  pick(engines: readonly EngineView[]): EngineView {
    const start = this.rotation++ % engines.length;
    let best = engines[start]!;
    for (let offset = 1; offset < engines.length; offset++) {
      const engine = engines[(start + offset) % engines.length]!;
      if (engine.outstanding < best.outstanding) best = engine;
    }
    return best;
  }
}

/** Two engines at random, the less loaded of them: near least-outstanding quality at O(1). */
export class PowerOfTwoPolicy implements RoutingPolicy {
  readonly name = 'power-of-two';
  constructor(private readonly random: () => number = Math.random) {}
  pick(engines: readonly EngineView[]): EngineView {
    if (engines.length === 1) return engines[0]!;
    const first = Math.floor(this.random() * engines.length);
    let second = Math.floor(this.random() * (engines.length - 1));
    if (second >= first) second++;
    const a = engines[first]!;
    const b = engines[second]!;
    return a.outstanding <= b.outstanding ? a : b;
  }
}

function hash32(text: string): number {
  // FNV-1a then a murmur finaliser: fast, well spread for short ids.
  let h = 0x811c9dc5;
  for (let index = 0; index < text.length; index++) {
    h ^= text.charCodeAt(index);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

/** Settings of {@link SessionAffinityPolicy}. */
export interface SessionAffinityOptions {
  /** A session's first request goes to an engine whose load is within this factor of the mean. @default 1.25 */
  loadFactor?: number;
  /** Points per engine on the hash ring. @default 100 */
  virtualNodes?: number;
  /** Routes requests without a session id. @default a {@link LeastOutstandingPolicy} */
  fallback?: RoutingPolicy;
  /**
   * How long a session's request waits for the engine its session last ran on when that engine is full (with a
   * per-engine cap that binds, e.g. `limits.perEngine.adaptive`), before it goes to another engine with room.
   * 0: never wait. @default 2000 (ms)
   */
  maxWaitMs?: number;
  /** Sessions whose engine is remembered (least recently used forgotten first). @default 100000 */
  maxSessions?: number;
}

/**
 * Session affinity: a session's requests go to the engine its previous request ran on, where its prefix is
 * cached. A session's first request takes a point on a consistent-hashing ring with bounded load (Mirrokni et
 * al.): the first engine clockwise whose load is within `loadFactor` x the mean, so removing an engine moves only
 * its own sessions.
 *
 * The rule with per-engine caps (late binding): when the session's engine is full, the request waits up to
 * `maxWaitMs` for it (others behind it may take free engines meanwhile), then spills to another engine with room;
 * the session then follows it there. An engine that is down, draining, or over `loadFactor` x the mean load is
 * left at once. Requests without a session id use `fallback`.
 */
export class SessionAffinityPolicy implements RoutingPolicy {
  readonly name = 'session-affinity';
  private ring: { point: number; endpoint: string }[] = [];
  /** Every endpoint on the ring: engines not offered to a pick (full, down, removed) are skipped, not re-hashed. */
  private readonly onRing = new Set<string>();
  private readonly loadFactor: number;
  private readonly virtualNodes: number;
  private readonly fallback: RoutingPolicy;
  private readonly maxWaitMs: number;
  private readonly maxSessions: number;
  /** Session id -> the engine its last request went to; insertion order is recency (LRU). */
  private readonly lastEngine = new Map<string, string>();

  /** `new SessionAffinityPolicy({ maxWaitMs: 500 })`; the positional form `(loadFactor, virtualNodes, fallback)` still works. */
  constructor(options: SessionAffinityOptions | number = {}, virtualNodes?: number, fallback?: RoutingPolicy) {
    const given: SessionAffinityOptions =
      typeof options === 'number'
        ? {
            loadFactor: options,
            ...(virtualNodes === undefined ? {} : { virtualNodes }),
            ...(fallback === undefined ? {} : { fallback }),
          }
        : (options ?? {});
    this.loadFactor = given.loadFactor ?? 1.25;
    this.virtualNodes = given.virtualNodes ?? 100;
    this.fallback = given.fallback ?? new LeastOutstandingPolicy();
    this.maxWaitMs = given.maxWaitMs ?? 2000;
    this.maxSessions = given.maxSessions ?? 100_000;
    if (!(this.loadFactor >= 1)) {
      throw new InvalidOptionsError(`Expected \`loadFactor\` >= 1, got \`${JSON.stringify(this.loadFactor)}\``);
    }
    if (!(Number.isInteger(this.virtualNodes) && this.virtualNodes >= 1)) {
      throw new InvalidOptionsError(
        `Expected \`virtualNodes\` to be a whole number >= 1, got \`${JSON.stringify(this.virtualNodes)}\``,
      );
    }
    if (!(typeof this.maxWaitMs === 'number' && this.maxWaitMs >= 0 && this.maxWaitMs <= 2 ** 31 - 1)) {
      throw new InvalidOptionsError(
        `Expected \`maxWaitMs\` to be a number of ms in 0..2147483647, got \`${JSON.stringify(this.maxWaitMs)}\``,
      );
    }
    if (!(Number.isInteger(this.maxSessions) && this.maxSessions >= 1)) {
      throw new InvalidOptionsError(
        `Expected \`maxSessions\` to be a whole number >= 1, got \`${JSON.stringify(this.maxSessions)}\``,
      );
    }
  }

  /**
   * The engine the session last ran on, if it is among `engines` and not overloaded: with a learned cap, the cap is
   * the bound (an engine with room keeps its sessions); with a fixed one, `loadFactor` x the mean load.
   */
  private home(engines: readonly EngineView[], sessionId: string): EngineView | undefined {
    const endpoint = this.lastEngine.get(sessionId);
    if (endpoint === undefined) return undefined;
    const engine = engines.find((candidate) => candidate.endpoint === endpoint);
    if (!engine) return undefined;
    if (engine.capIsLearned) return engine;
    let total = 0;
    for (const other of engines) total += other.outstanding;
    const bound = Math.max(1, Math.ceil((total / engines.length) * this.loadFactor));
    return engine.outstanding <= bound ? engine : undefined;
  }

  preferred(engines: readonly EngineView[], context: RoutingContext): RoutingPreference | undefined {
    if (context.sessionId === undefined || this.maxWaitMs === 0) return undefined;
    const engine = this.home(engines, context.sessionId);
    return engine && { engine, maxWaitMs: this.maxWaitMs };
  }

  private remember(sessionId: string, engine: EngineView): EngineView {
    this.lastEngine.delete(sessionId);
    this.lastEngine.set(sessionId, engine.endpoint);
    if (this.lastEngine.size > this.maxSessions) {
      this.lastEngine.delete(this.lastEngine.keys().next().value as string);
    }
    return engine;
  }

  private buildRing(engines: readonly EngineView[]): void {
    let added = false;
    for (const engine of engines) {
      if (this.onRing.has(engine.endpoint)) continue;
      this.onRing.add(engine.endpoint);
      added = true;
      for (let replica = 0; replica < this.virtualNodes; replica++) {
        this.ring.push({ point: hash32(`${engine.endpoint}#${replica}`), endpoint: engine.endpoint });
      }
    }
    if (added) this.ring.sort((a, b) => a.point - b.point);
  }

  pick(engines: readonly EngineView[], context: RoutingContext): EngineView {
    if (context.sessionId === undefined) return this.fallback.pick(engines, context);
    if (engines.length === 1) return this.remember(context.sessionId, engines[0]!);
    const home = this.home(engines, context.sessionId);
    if (home) return this.remember(context.sessionId, home);
    return this.remember(context.sessionId, this.placeOnRing(engines, context.sessionId, context));
  }

  private placeOnRing(engines: readonly EngineView[], sessionId: string, context: RoutingContext): EngineView {
    this.buildRing(engines);
    const byEndpoint = new Map(engines.map((engine) => [engine.endpoint, engine]));
    let total = 0;
    for (const engine of engines) total += engine.outstanding;
    const bound = Math.max(1, Math.ceil(((total + 1) / engines.length) * this.loadFactor));
    const target = hash32(sessionId);
    let low = 0;
    let high = this.ring.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.ring[middle]!.point < target) low = middle + 1;
      else high = middle;
    }
    for (let step = 0; step < this.ring.length; step++) {
      const engine = byEndpoint.get(this.ring[(low + step) % this.ring.length]!.endpoint);
      if (engine && engine.outstanding < bound) return engine;
    }
    return this.fallback.pick(engines, context);
  }
}

/** A built-in policy by name, or the given policy. */
export function resolvePolicy(policy: RoutingPolicyName | RoutingPolicy | undefined): RoutingPolicy {
  if (policy === undefined) return new LeastOutstandingPolicy();
  if (typeof policy === 'object' && policy !== null && typeof policy.pick === 'function') return policy;
  switch (policy) {
    case 'round-robin':
      return new RoundRobinPolicy();
    case 'least-outstanding':
      return new LeastOutstandingPolicy();
    case 'power-of-two':
      return new PowerOfTwoPolicy();
    case 'session-affinity':
      return new SessionAffinityPolicy();
    default:
      throw new InvalidOptionsError(
        `Expected \`routing\` to be round-robin, least-outstanding, power-of-two, session-affinity or a policy object, got \`${JSON.stringify(policy)}\``,
      );
  }
}
