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
}

/** Where an engine stands. `half-open`: cooldown over, one probe request allowed. */
export type EngineHealthState = 'healthy' | 'cooldown' | 'half-open';

/** Circuit breaker of one engine: consecutive failures -> cooldown with growing backoff -> half-open probe. */
export class EngineHealth {
  private consecutiveFailures = 0;
  private cooldownUntilMs = 0;
  private cooldownMs: number;
  private probing = false;

  /** @param now the clock (`performance.now()`; a test passes its own). */
  constructor(
    private readonly options: Required<HealthOptions>,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.cooldownMs = options.cooldownMs;
  }

  get state(): EngineHealthState {
    if (this.cooldownUntilMs === 0) return 'healthy';
    return this.now() < this.cooldownUntilMs ? 'cooldown' : 'half-open';
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
  }

  /** The request ended without a verdict on reachability (aborted): release a half-open probe. */
  onSettled(): void {
    this.probing = false;
  }

  /**
   * A connection-level failure (not an HTTP status): counts toward cooldown. A failure once the cooldown is over
   * is a failed half-open probe and re-arms it, doubled — whether or not the probe was already released: the
   * request path releases its ticket (which clears `probing`) before it records the failure, and reading
   * `probing` alone left the engine half-open for good (2,741 connections to a dead engine in 8 s).
   */
  onConnectionFailure(): void {
    this.consecutiveFailures++;
    const failedProbe = this.probing || this.state === 'half-open';
    this.probing = false;
    if (failedProbe) {
      this.cooldownMs = Math.min(this.options.maxCooldownMs, this.cooldownMs * 2);
      this.cooldownUntilMs = this.now() + this.cooldownMs;
    } else if (this.consecutiveFailures >= this.options.failureThreshold && this.cooldownUntilMs === 0) {
      this.cooldownUntilMs = this.now() + this.cooldownMs;
    }
  }

  /** Milliseconds until this engine may be probed again (0 when available). */
  msUntilAvailable(): number {
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
  };
  const checks: [keyof HealthOptions, number, string][] = [
    ['failureThreshold', 1, 'a whole number >= 1'],
    ['cooldownMs', 1, 'a number of ms in 1..2147483647'],
    ['maxCooldownMs', 1, 'a number of ms in 1..2147483647'],
    ['activeCheckIntervalMs', 0, 'a number of ms in 0..2147483647 (0 = off)'],
  ];
  for (const [field, min, expected] of checks) {
    const value = resolved[field];
    const ok =
      typeof value === 'number' &&
      value >= min &&
      value <= 2 ** 31 - 1 &&
      (field !== 'failureThreshold' || Number.isInteger(value));
    if (!ok) {
      throw new InvalidOptionsError(`Expected \`health.${field}\` to be ${expected}, got \`${JSON.stringify(value)}\``);
    }
  }
  return resolved;
}
