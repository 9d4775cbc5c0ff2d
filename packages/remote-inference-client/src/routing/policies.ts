import { InvalidOptionsError } from '../errors.js';

/** What a policy sees of one engine. */
export interface EngineView {
  readonly endpoint: string;
  /** Requests sent to this engine and not finished. */
  readonly outstanding: number;
  /** Position in the client's engine list. */
  readonly index: number;
}

/** Per-request routing input. */
export interface RoutingContext {
  /** Multi-turn session: requests with the same id should reach the same engine (prefix-cache hits). */
  sessionId?: string | undefined;
}

/** Picks an engine among the available ones. Implement it to plug in your own routing. */
export interface RoutingPolicy {
  readonly name: string;
  /** `engines` is non-empty and holds only engines that may take a request now. */
  pick(engines: readonly EngineView[], context: RoutingContext): EngineView;
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

/**
 * Session affinity by consistent hashing with bounded load (Mirrokni et al.): a session maps to the first engine
 * clockwise on a ring of virtual nodes whose load is within `loadFactor` x the mean; so a session stays on its
 * engine across turns (prefix-cache hits) unless that engine is overloaded or gone, and removing an engine moves
 * only its own sessions. Requests without a session id use `fallback`.
 */
export class SessionAffinityPolicy implements RoutingPolicy {
  readonly name = 'session-affinity';
  private ring: { point: number; endpoint: string }[] = [];
  private ringKey = '';

  constructor(
    private readonly loadFactor = 1.25,
    private readonly virtualNodes = 100,
    private readonly fallback: RoutingPolicy = new LeastOutstandingPolicy(),
  ) {
    if (!(loadFactor >= 1)) throw new InvalidOptionsError(`Expected \`loadFactor\` >= 1, got \`${loadFactor}\``);
  }

  private buildRing(engines: readonly EngineView[]): void {
    const key = engines.map((engine) => engine.endpoint).join('|');
    if (key === this.ringKey) return;
    this.ringKey = key;
    this.ring = engines
      .flatMap((engine) =>
        Array.from({ length: this.virtualNodes }, (_, replica) => ({
          point: hash32(`${engine.endpoint}#${replica}`),
          endpoint: engine.endpoint,
        })),
      )
      .sort((a, b) => a.point - b.point);
  }

  pick(engines: readonly EngineView[], context: RoutingContext): EngineView {
    if (context.sessionId === undefined || engines.length === 1) return this.fallback.pick(engines, context);
    this.buildRing(engines);
    const byEndpoint = new Map(engines.map((engine) => [engine.endpoint, engine]));
    let total = 0;
    for (const engine of engines) total += engine.outstanding;
    const bound = Math.max(1, Math.ceil(((total + 1) / engines.length) * this.loadFactor));
    const target = hash32(context.sessionId);
    let low = 0;
    let high = this.ring.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.ring[middle]!.point < target) low = middle + 1;
      else high = middle;
    }
    for (let step = 0; step < this.ring.length; step++) {
      const engine = byEndpoint.get(this.ring[(low + step) % this.ring.length]!.endpoint)!;
      if (engine.outstanding < bound) return engine;
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
