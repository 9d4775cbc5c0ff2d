import { performance } from 'node:perf_hooks';
import { InvalidOptionsError } from '../errors.js';

/** Passive and active engine health. */
export interface HealthOptions {
  /** Consecutive connection failures that put an engine in cooldown. @default 3 */
  failureThreshold?: number;
  /** First cooldown; doubles on each failed half-open probe. @default 1000 (ms) */
  cooldownMs?: number;
  /** @default 30000 (ms) */
  maxCooldownMs?: number;
  /** Poll `GET /health` on every engine this often; 0 disables active checks. @default 0 (ms) */
  activeCheckIntervalMs?: number;
  /**
   * An engine in cooldown because it refused connections (nobody listening: stopped, or restarting) is probed with
   * `GET /health` this long after the refusal, and again this long after each refused probe (a probe that times
   * out or gets a 5xx waits twice as long each time, up to 8x); the first answer re-admits it. No request is risked on it, and a restarted engine is back in use within about this long after it
   * listens again, instead of after the next half-open request. 0: a half-open request probes it, as any other
   * cooldown. @default 250 (ms)
   */
  probeIntervalMs?: number;
}

/**
 * Where an engine stands. `half-open`: cooldown over, one probe request allowed. An engine that refused connections
 * stays in `cooldown` until a `GET /health` probe is answered (see {@link HealthOptions.probeIntervalMs}).
 */
export type EngineHealthState = 'healthy' | 'cooldown' | 'half-open';

/**
 * Circuit breaker of one engine: consecutive failures -> cooldown with growing backoff -> half-open probe. When
 * the failure that (re)armed the cooldown was a refused connection, the probe is `GET /health` instead of a
 * request (a refusal costs nothing to probe, and an engine that is listening again has restarted): the client's
 * {@link RecoveryProber} sends it when {@link probeDueInMs} says, and reports with {@link onProbe}.
 */
export class EngineHealth {
  private consecutiveFailures = 0;
  private cooldownUntilMs = 0;
  private cooldownMs: number;
  private probing = false;
  /** The cooldown was (re)armed by a refused connection: only a `/health` probe ends it. */
  private refused = false;
  private probeDelayMs = 0;
  private probeAtMs = 0;

  /** @param now the clock (`performance.now()`; a test passes its own). */
  constructor(
    private readonly options: Required<HealthOptions>,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.cooldownMs = options.cooldownMs;
  }

  get state(): EngineHealthState {
    if (this.cooldownUntilMs === 0) return 'healthy';
    if (this.refused) return 'cooldown';
    return this.now() < this.cooldownUntilMs ? 'cooldown' : 'half-open';
  }

  /** Whether this engine waits for a `GET /health` probe (it refused connections), not for a request probe. */
  get awaitsProbe(): boolean {
    return this.refused && this.cooldownUntilMs !== 0;
  }

  /** Milliseconds until the next `/health` probe is due (0: now); undefined when none is awaited. */
  probeDueInMs(): number | undefined {
    return this.awaitsProbe ? Math.max(0, this.probeAtMs - this.now()) : undefined;
  }

  /**
   * The `/health` probe's verdict. Answered: the engine listens again, and is re-admitted (the cooldown's backoff
   * stays where it was until a request succeeds, so an engine that answers probes but fails requests still backs
   * off). Refused: nobody listens yet (a restart in progress); the next probe comes after `probeIntervalMs` again,
   * as a refusal costs one round trip, so a restarted engine is back in use within that interval of listening.
   * Anything else (a timeout, a reset, a 5xx: a host that does not answer, or an engine that is not well): the next
   * probe waits twice as long, up to 8x `probeIntervalMs`.
   */
  onProbe(answered: boolean, refused = false): void {
    if (!this.awaitsProbe) return;
    if (answered) {
      this.consecutiveFailures = 0;
      this.cooldownUntilMs = 0;
      this.refused = false;
      this.probing = false;
      return;
    }
    this.probeDelayMs = refused
      ? this.options.probeIntervalMs
      : Math.min(8 * this.options.probeIntervalMs, 2 * this.probeDelayMs);
    this.probeAtMs = this.now() + this.probeDelayMs;
  }

  /** Whether a request may go to this engine now (half-open: only one probe at a time). */
  available(): boolean {
    const state = this.state;
    if (state === 'healthy') return true;
    if (state === 'cooldown') return false;
    return !this.probing;
  }

  /** Call when a request is sent; marks the half-open probe. */
  onSend(): void {
    if (this.state === 'half-open') this.probing = true;
  }

  onSuccess(): void {
    this.consecutiveFailures = 0;
    this.cooldownUntilMs = 0;
    this.cooldownMs = this.options.cooldownMs;
    this.probing = false;
    this.refused = false;
  }

  /** The request ended without a verdict on reachability (aborted): release a half-open probe. */
  onSettled(): void {
    this.probing = false;
  }

  /**
   * A connection-level failure (not an HTTP status): counts toward cooldown. A failure once the cooldown is over
   * is a failed half-open probe and re-arms it, doubled — whether or not the probe was already released (reading
   * `probing` alone once left the engine half-open for good: 2,741 connections to a dead engine in 8 s). The
   * request path records the failure before it settles the probe's grant, so no waiting request is granted the
   * engine in between.
   * `refused`: the connection was refused (ECONNREFUSED). When such a failure (re)arms the cooldown, a `/health`
   * probe ends it (with `probeIntervalMs` > 0); the failures of requests sent before it do not change how.
   */
  onConnectionFailure(refused = false): void {
    this.consecutiveFailures++;
    const failedProbe = this.probing || this.state === 'half-open';
    this.probing = false;
    if (failedProbe) {
      this.cooldownMs = Math.min(this.options.maxCooldownMs, this.cooldownMs * 2);
      this.arm(refused);
    } else if (this.consecutiveFailures >= this.options.failureThreshold && this.cooldownUntilMs === 0) {
      this.arm(refused);
    }
  }

  private arm(refused: boolean): void {
    this.cooldownUntilMs = this.now() + this.cooldownMs;
    this.refused = refused && this.options.probeIntervalMs > 0;
    this.probeDelayMs = this.options.probeIntervalMs;
    this.probeAtMs = this.now() + this.probeDelayMs;
  }

  /**
   * Milliseconds until this engine may take a request (a half-open probe) without anything else happening first;
   * 0 when available, and 0 when only an answered `/health` probe can re-admit it (the prober wakes the queue then:
   * no timer of the scheduler's would help).
   */
  msUntilAvailable(): number {
    if (this.awaitsProbe) return 0;
    return Math.max(0, this.cooldownUntilMs - this.now());
  }
}

/** Applies defaults to health options. */
export function resolveHealthOptions(options: HealthOptions = {}): Required<HealthOptions> {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidOptionsError(`Expected \`health\` to be an object, got \`${JSON.stringify(options)}\``);
  }
  const resolved = {
    failureThreshold: options.failureThreshold ?? 3,
    cooldownMs: options.cooldownMs ?? 1000,
    maxCooldownMs: options.maxCooldownMs ?? 30_000,
    activeCheckIntervalMs: options.activeCheckIntervalMs ?? 0,
    probeIntervalMs: options.probeIntervalMs ?? 250,
  };
  // A probe delay grows to 8x probeIntervalMs: that must still fit a Node timer.
  const checks: [keyof HealthOptions, number, number, string][] = [
    ['failureThreshold', 1, 2 ** 31 - 1, 'a whole number >= 1'],
    ['cooldownMs', 1, 2 ** 31 - 1, 'a number of ms in 1..2147483647'],
    ['maxCooldownMs', 1, 2 ** 31 - 1, 'a number of ms in 1..2147483647'],
    ['activeCheckIntervalMs', 0, 2 ** 31 - 1, 'a number of ms in 0..2147483647 (0 = off)'],
    ['probeIntervalMs', 0, 2 ** 28 - 1, 'a number of ms in 0..268435455 (0 = off)'],
  ];
  for (const [field, min, max, expected] of checks) {
    const value = resolved[field];
    const ok =
      typeof value === 'number' &&
      value >= min &&
      value <= max &&
      (field !== 'failureThreshold' || Number.isInteger(value));
    if (!ok) {
      throw new InvalidOptionsError(`Expected \`health.${field}\` to be ${expected}, got \`${JSON.stringify(value)}\``);
    }
  }
  return resolved;
}
