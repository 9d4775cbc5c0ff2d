import diagnosticsChannel from 'node:diagnostics_channel';

/** Name of the `diagnostics_channel` every finished request is published on. */
export const REQUEST_CHANNEL = 'remote-inference-client:request';

/** What the client measured for one request (all durations in ms). */
export interface RequestStats {
  /** API path, e.g. `/v1/completions`. */
  path: string;
  /** Engine that served the last attempt. */
  engine: string;
  /** The request's session id, when it had one. */
  sessionId: string | undefined;
  /** `RequestOptions.tag`, echoed. */
  tag: unknown;
  ok: boolean;
  /** Error code when not ok. */
  errorCode: string | undefined;
  status: number | undefined;
  attempts: number;
  /** Attempts re-sent at once because a reused idle socket died before any byte. */
  staleRetries: number;
  /** Token-in/token-out streams resumed after a cut. */
  resumes: number;
  /** Waiting in the client's own limits (admission queue). */
  queueMs: number;
  /** Waiting for a pooled connection. */
  poolWaitMs: number;
  /** TCP connect, when the last attempt opened a connection. */
  connectMs: number | undefined;
  reusedConnection: boolean;
  /** Request written to response headers. */
  ttfbMs: number | undefined;
  /** Request start (after admission) to the first token event; streams only. */
  ttftMs: number | undefined;
  /** Gaps between token events (streams), when someone listens; else undefined. */
  interTokenGapsMs: number[] | undefined;
  /** Token events received. */
  events: number;
  /** Whole request, admission and retries included. */
  totalMs: number;
  /**
   * The engine's own queue wait and TTFT, when it reports them in a standard `Server-Timing` header or trailer
   * (`queue;dur=12.5, ttft;dur=480`): fake-vllm does, and so can any proxy in front of vLLM.
   */
  serverQueueMs: number | undefined;
  serverTtftMs: number | undefined;
  /** `Date.now()` at start. */
  startedAt: number;
}

const channel = diagnosticsChannel.channel(REQUEST_CHANNEL);

/** @internal Whether anyone wants per-request details (gap arrays cost memory at 10,000 streams). */
export function wantsDetails(hook: unknown): boolean {
  return hook !== undefined || channel.hasSubscribers;
}

/** @internal Delivers stats to the hook and the channel; `build` runs only when one of them listens (off the hot path). */
export function publishRequestStats(
  build: () => RequestStats,
  hook: ((stats: RequestStats) => void) | undefined,
): void {
  if (!hook && !channel.hasSubscribers) return;
  const stats = build();
  if (hook) {
    try {
      hook(stats);
    } catch (error) {
      process.emitWarning(`remote-inference-client: onRequestEnd threw: ${(error as Error).message}`);
    }
  }
  if (channel.hasSubscribers) channel.publish(stats);
}
