import {
  ClientClosedError,
  HttpStatusError,
  type InferenceError,
  InvalidOptionsError,
  isInferenceError,
} from '../errors.js';
import { deadlineSignal, isAttemptFailure, type SendAttempt } from '../transport/attempt.js';
import type { ResolvedClientOptions } from './options.js';

/** One engine's answer to a fanned-out control call. */
export type EngineResult<T = unknown> =
  | { engine: string; ok: true; status: number; value: T }
  | { engine: string; ok: false; error: InferenceError };

/**
 * vLLM's RL control plane, sent to every engine at once. Never throws for one engine's failure: each engine gets
 * a result or an error. Phase changes (pause, resume, sleep, wake_up) evict idle sockets, since an engine that
 * slept or restarted may have dropped them.
 */
export class ControlPlane {
  /** @internal the client builds it; the constructor is not part of the API. */
  constructor(
    private readonly engines: () => string[],
    /** The client's one attempt function: the transport, or the `sendAttempt` seam (a mocked network is never contacted). */
    private readonly send: SendAttempt,
    private readonly options: ResolvedClientOptions,
    private readonly evict: () => number,
    private readonly isClosed: () => boolean = () => false,
  ) {}

  private async fanOut<T>(
    method: 'GET' | 'POST',
    path: string,
    body?: unknown,
    timeoutMs = 60_000,
  ): Promise<EngineResult<T>[]> {
    // After close() (a waitUntilHealthy loop included): a typed rejection, not calls on a released transport.
    if (this.isClosed()) throw new ClientClosedError();
    if (typeof timeoutMs !== 'number' || !(timeoutMs > 0)) {
      throw new InvalidOptionsError(
        `Expected \`timeoutMs\` to be a number of ms > 0 (Infinity: no deadline), got \`${String(timeoutMs)}\``,
      );
    }
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return Promise.all(
      this.engines().map(async (engine): Promise<EngineResult<T>> => {
        const { signal, clear } = deadlineSignal(timeoutMs, engine);
        try {
          const result = await this.send(
            engine,
            {
              method,
              path,
              headers: {
                ...this.options.headers,
                ...(payload === undefined ? {} : { 'content-type': 'application/json' }),
              },
              body: payload,
              ttfbTimeoutMs: timeoutMs,
              idleTimeoutMs: timeoutMs,
              maxResponseBytes: this.options.transport.maxResponseBytes,
              connectTimeoutMs: this.options.timeouts.connectMs,
              signal,
            },
            undefined,
          );
          const text = result.body?.toString('utf8') ?? '';
          if (result.status < 200 || result.status >= 300) {
            return { engine, ok: false, error: new HttpStatusError(result.status, text, { engine }) };
          }
          let value: unknown = text;
          if (text !== '') {
            try {
              value = JSON.parse(text);
            } catch {
              // plain-text answers stay text
            }
          }
          return { engine, ok: true, status: result.status, value: value as T };
        } catch (failure) {
          const error = isAttemptFailure(failure)
            ? failure.error
            : isInferenceError(failure)
              ? failure
              : new HttpStatusError(0, String(failure), { engine });
          return { engine, ok: false, error };
        } finally {
          clear();
        }
      }),
    );
  }

  private async phase<T>(path: string, timeoutMs: number | undefined): Promise<EngineResult<T>[]> {
    const results = await this.fanOut<T>('POST', path, undefined, timeoutMs);
    this.evict();
    return results;
  }

  /**
   * `POST /pause?mode=`: `abort` ends in-flight requests, `wait` lets them finish, `keep` freezes them. A `wait`
   * lasts as long as the longest rollout: give it a `timeoutMs` above that (default 60 s; an engine that answers
   * later is reported failed although it paused).
   */
  pause({ mode = 'abort', timeoutMs }: { mode?: 'abort' | 'wait' | 'keep'; timeoutMs?: number } = {}) {
    return this.phase(`/pause?mode=${encodeURIComponent(mode)}`, timeoutMs);
  }

  /** `POST /resume`. */
  resume({ timeoutMs }: { timeoutMs?: number } = {}) {
    return this.phase('/resume', timeoutMs);
  }

  /** `POST /sleep?level=`. */
  sleep({ level = 1, timeoutMs }: { level?: number; timeoutMs?: number } = {}) {
    return this.phase(`/sleep?level=${encodeURIComponent(String(level))}`, timeoutMs);
  }

  /** `POST /wake_up`. */
  wakeUp({ timeoutMs }: { timeoutMs?: number } = {}) {
    return this.phase('/wake_up', timeoutMs);
  }

  /** `GET /is_paused`. */
  isPaused({ timeoutMs }: { timeoutMs?: number } = {}) {
    return this.fanOut<{ is_paused: boolean }>('GET', '/is_paused', undefined, timeoutMs);
  }

  /** `GET /is_sleeping`. */
  isSleeping({ timeoutMs }: { timeoutMs?: number } = {}) {
    return this.fanOut<{ is_sleeping: boolean }>('GET', '/is_sleeping', undefined, timeoutMs);
  }

  /** `POST /reset_prefix_cache`. */
  resetPrefixCache({ timeoutMs }: { timeoutMs?: number } = {}) {
    return this.fanOut('POST', '/reset_prefix_cache', undefined, timeoutMs);
  }

  /** `POST /init_weight_transfer_engine`. */
  initWeightTransferEngine(body: Record<string, unknown> = {}, { timeoutMs }: { timeoutMs?: number } = {}) {
    return this.fanOut('POST', '/init_weight_transfer_engine', body, timeoutMs);
  }

  /** `POST /update_weights`. */
  updateWeights(body: Record<string, unknown> = {}, { timeoutMs = 600_000 }: { timeoutMs?: number } = {}) {
    return this.fanOut('POST', '/update_weights', body, timeoutMs);
  }

  /** `POST /collective_rpc`. */
  collectiveRpc(
    body: { method: string; args?: unknown[]; kwargs?: Record<string, unknown>; timeout?: number },
    { timeoutMs }: { timeoutMs?: number } = {},
  ) {
    return this.fanOut<{ results: unknown[] }>('POST', '/collective_rpc', body, timeoutMs);
  }

  /** `GET /get_world_size`. */
  getWorldSize({ timeoutMs }: { timeoutMs?: number } = {}) {
    return this.fanOut<{ world_size: number }>('GET', '/get_world_size', undefined, timeoutMs);
  }

  /** `GET /health` on every engine (ok = 200). */
  health(timeoutMs = 5000): Promise<EngineResult[]> {
    return this.fanOut('GET', '/health', undefined, timeoutMs);
  }
}
