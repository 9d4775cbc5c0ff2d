/**
 * Every error this package throws. One base class with a stable string `code`, a `Symbol.for` brand so
 * {@link isInferenceError} works across two copies of the package, and what a user needs to act on it.
 */

const BRAND = Symbol.for('remote-inference-client.error');
/** The brands of an error's class and every class above it (own property, non-enumerable). */
const CLASS_BRANDS = Symbol.for('remote-inference-client.error.classes');
const BRAND_PREFIX = 'remote-inference-client.error.';
/**
 * Each class's cross-copy brand, set in its static block from a literal `Symbol.for` (as undici brands each class
 * with `Symbol.for('undici.error.UND_ERR_...')`): a minifier that renames the class cannot change it. A class
 * without an entry (a caller's own subclass) falls back to the prototype chain.
 */
const CLASS_BRAND = new WeakMap<object, symbol>();

/** Stable error codes. */
export type InferenceErrorCode =
  | 'ERR_INVALID_OPTIONS'
  | 'ERR_CONNECTION'
  | 'ERR_TIMEOUT'
  | 'ERR_ABORTED'
  | 'ERR_HTTP_STATUS'
  | 'ERR_STREAM_INTERRUPTED'
  | 'ERR_STREAM_TRUNCATED'
  | 'ERR_STREAM_PARSE'
  | 'ERR_SERVER_STREAM_ERROR'
  | 'ERR_RETRIES_EXHAUSTED'
  | 'ERR_ENGINE_UNAVAILABLE'
  | 'ERR_PORTS_EXHAUSTED'
  | 'ERR_TOO_MANY_OPEN_FILES'
  | 'ERR_QUEUE_FULL'
  | 'ERR_LIMITER_UNAVAILABLE'
  | 'ERR_CLIENT_CLOSED'
  | 'ERR_UNEXPECTED';

/** What every {@link InferenceError} may carry. */
export interface InferenceErrorDetails {
  /** Engine endpoint the failing attempt went to. */
  engine?: string | undefined;
  /** HTTP status, when a response arrived. */
  status?: number | undefined;
  /** Response body (truncated to 4 KiB), when one arrived. */
  body?: string | undefined;
  /** Attempts made, including this one. */
  attempts?: number | undefined;
  /** Whether retrying the same request could succeed. */
  retryable?: boolean | undefined;
  /** What to do about it. */
  hint?: string | undefined;
  cause?: unknown;
}

/** Base of every error this package throws. */
export class InferenceError extends Error {
  readonly code: InferenceErrorCode;
  readonly engine: string | undefined;
  readonly status: number | undefined;
  readonly body: string | undefined;
  attempts: number;
  readonly retryable: boolean;
  readonly hint: string | undefined;

  /**
   * `instanceof` that works across two copies of this package (two versions in one dependency tree, or ESM and CJS):
   * each class is recognised by its `Symbol.for` brand, not by prototype identity.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class `instanceof` asks about (a subclass too).
    const brand = CLASS_BRAND.get(this);
    // A caller's subclass has no brand of its own: the ordinary prototype check.
    // biome-ignore lint/complexity/noThisInStatic: the same class.
    if (brand === undefined) return Function.prototype[Symbol.hasInstance].call(this, value);
    if (typeof value !== 'object' || value === null) return false;
    // The base brand: every copy of the package sets it, including copies that predate the class brands.
    if (brand === CLASS_BRAND.get(InferenceError)) return (value as Record<symbol, unknown>)[BRAND] === true;
    const brands = (value as Record<symbol, unknown>)[CLASS_BRANDS];
    return Array.isArray(brands) && brands.includes(brand);
  }

  static {
    CLASS_BRAND.set(InferenceError, Symbol.for('remote-inference-client.error.InferenceError'));
  }

  constructor(code: InferenceErrorCode, message: string, details: InferenceErrorDetails = {}) {
    super(message, { cause: details.cause });
    const own = CLASS_BRAND.get(new.target);
    // Named from the literal brand, not `new.target.name`, which a minifier renames.
    this.name = own?.description?.slice(BRAND_PREFIX.length) ?? new.target.name;
    const brands: symbol[] = [];
    for (let type: object | null = new.target; type !== null && type !== Error; type = Object.getPrototypeOf(type)) {
      const brand = CLASS_BRAND.get(type);
      if (brand !== undefined) brands.push(brand);
    }
    Object.defineProperty(this, CLASS_BRANDS, { value: brands });
    this.code = code;
    this.engine = details.engine;
    this.status = details.status;
    this.body = details.body === undefined ? undefined : details.body.slice(0, 4096);
    this.attempts = details.attempts ?? 1;
    this.retryable = details.retryable ?? false;
    this.hint = details.hint;
    Object.defineProperty(this, BRAND, { value: true });
  }
}

/** True for errors thrown by any copy of this package. */
export function isInferenceError(value: unknown): value is InferenceError {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
}

/** An option had the wrong type or value; the message names the field, what was expected and what came. */
export class InvalidOptionsError extends InferenceError {
  static {
    CLASS_BRAND.set(InvalidOptionsError, Symbol.for('remote-inference-client.error.InvalidOptionsError'));
  }

  constructor(message: string, details: Omit<InferenceErrorDetails, 'retryable'> = {}) {
    super('ERR_INVALID_OPTIONS', message, {
      hint: 'Fix the option named in the message.',
      ...details,
      retryable: false,
    });
  }
}

/**
 * The connection failed before the response reached the caller. `retryable` when `systemCode` is a known
 * connection failure (refused, reset, closed, unreachable); an unknown failure is not re-sent.
 */
export class ConnectionError extends InferenceError {
  static {
    CLASS_BRAND.set(ConnectionError, Symbol.for('remote-inference-client.error.ConnectionError'));
  }

  /** The system or undici error code underneath (ECONNRESET, ECONNREFUSED, UND_ERR_SOCKET, ...). */
  readonly systemCode: string | undefined;
  constructor(message: string, systemCode: string | undefined, details: Omit<InferenceErrorDetails, 'retryable'> = {}) {
    super('ERR_CONNECTION', message, {
      ...details,
      retryable: systemCode !== undefined && CONNECTION_CODES.has(systemCode),
    });
    this.systemCode = systemCode;
  }
}

/** Which deadline expired. */
export type TimeoutPhase = 'connect' | 'ttfb' | 'idle' | 'total' | 'queue';

/** A deadline expired. `phase` says which: connect, time to first byte, idle between chunks, total, or queue. */
export class TimeoutError extends InferenceError {
  static {
    CLASS_BRAND.set(TimeoutError, Symbol.for('remote-inference-client.error.TimeoutError'));
  }

  readonly phase: TimeoutPhase;
  readonly timeoutMs: number;
  constructor(phase: TimeoutPhase, timeoutMs: number, details: Omit<InferenceErrorDetails, 'retryable'> = {}) {
    super('ERR_TIMEOUT', `${phase} timeout after ${timeoutMs} ms${details.engine ? ` (${details.engine})` : ''}`, {
      hint: `Raise \`timeouts.${phase === 'queue' ? 'total' : phase}Ms\` if the engine is legitimately slow.`,
      ...details,
      // Only a connect timeout is safe to re-send: nothing reached the engine.
      retryable: phase === 'connect',
    });
    this.phase = phase;
    this.timeoutMs = timeoutMs;
  }
}

/** The caller aborted (signal, `break` out of a stream, or `close()`). */
export class AbortError extends InferenceError {
  static {
    CLASS_BRAND.set(AbortError, Symbol.for('remote-inference-client.error.AbortError'));
  }

  constructor(message = 'The request was aborted', details: Omit<InferenceErrorDetails, 'retryable'> = {}) {
    super('ERR_ABORTED', message, { ...details, retryable: false });
  }
}

/** The engine answered with a non-2xx status. */
export class HttpStatusError extends InferenceError {
  static {
    CLASS_BRAND.set(HttpStatusError, Symbol.for('remote-inference-client.error.HttpStatusError'));
  }

  /** Server-requested wait before a retry, from `Retry-After`, in ms. */
  readonly retryAfterMs: number | undefined;
  constructor(
    status: number,
    body: string,
    details: Omit<InferenceErrorDetails, 'retryable'> & { retryAfterMs?: number | undefined } = {},
  ) {
    const summary = summarizeBody(body);
    super(
      'ERR_HTTP_STATUS',
      `HTTP ${status}${summary ? `: ${summary}` : ''}${details.engine ? ` (${details.engine})` : ''}`,
      {
        ...details,
        status,
        body,
        retryable: isRetryableStatus(status, body),
      },
    );
    this.retryAfterMs = details.retryAfterMs;
  }
}

/**
 * Whether a generation request may be re-sent after this status: 429 and 503 (the engine refused the work), and a
 * plain-text 5xx from a router in front (a vLLM 5xx is JSON: the engine did the work; a router's is text, meaning
 * the engine likely never saw the request).
 */
function isRetryableStatus(status: number, body: string): boolean {
  if (status === 429 || status === 503) return true;
  if (status < 500 || status >= 600) return false;
  const trimmed = body.trimStart();
  return !(trimmed.startsWith('{') || trimmed.startsWith('['));
}

function summarizeBody(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: string }; message?: string; detail?: unknown };
    const message =
      parsed.error?.message ?? parsed.message ?? (parsed.detail ? JSON.stringify(parsed.detail) : undefined);
    if (message) return message.slice(0, 300);
  } catch {
    // not JSON: a router's plain text
  }
  return body.trim().slice(0, 300);
}

/** A stream broke after bytes reached the caller: never re-sent, except token-in/token-out with `resume`. */
export class StreamInterruptedError extends InferenceError {
  static {
    CLASS_BRAND.set(StreamInterruptedError, Symbol.for('remote-inference-client.error.StreamInterruptedError'));
  }

  constructor(message: string, details: Omit<InferenceErrorDetails, 'retryable'> = {}) {
    super('ERR_STREAM_INTERRUPTED', message, {
      hint: 'For /inference/v1/generate pass `resume: true` to continue from the tokens received.',
      ...details,
      // Bytes reached the caller: re-sending could duplicate them (resume decides separately).
      retryable: false,
    });
  }
}

/** The stream ended cleanly at the HTTP level but without `data: [DONE]`. */
export class StreamTruncatedError extends InferenceError {
  static {
    CLASS_BRAND.set(StreamTruncatedError, Symbol.for('remote-inference-client.error.StreamTruncatedError'));
  }

  constructor(details: Omit<InferenceErrorDetails, 'retryable'> = {}) {
    super('ERR_STREAM_TRUNCATED', `Stream ended without [DONE]${details.engine ? ` (${details.engine})` : ''}`, {
      ...details,
      retryable: false,
    });
  }
}

/** A stream event or response body was not valid JSON. */
export class StreamParseError extends InferenceError {
  static {
    CLASS_BRAND.set(StreamParseError, Symbol.for('remote-inference-client.error.StreamParseError'));
  }

  constructor(message: string, details: Omit<InferenceErrorDetails, 'retryable'> = {}) {
    super('ERR_STREAM_PARSE', message, { ...details, retryable: false });
  }
}

/** The server sent an error event after the stream started (vLLM's `data: {"error": ...}`). */
export class ServerStreamError extends InferenceError {
  static {
    CLASS_BRAND.set(ServerStreamError, Symbol.for('remote-inference-client.error.ServerStreamError'));
  }

  constructor(message: string, details: Omit<InferenceErrorDetails, 'retryable'> = {}) {
    super('ERR_SERVER_STREAM_ERROR', `Server error mid-stream: ${message}`, { ...details, retryable: false });
  }
}

/** Every allowed attempt failed; `errors` holds each attempt's error, in order. */
export class RetriesExhaustedError extends InferenceError {
  static {
    CLASS_BRAND.set(RetriesExhaustedError, Symbol.for('remote-inference-client.error.RetriesExhaustedError'));
  }

  readonly errors: InferenceError[];
  constructor(errors: InferenceError[], reason: string) {
    const last = errors.at(-1);
    super('ERR_RETRIES_EXHAUSTED', `${reason} after ${errors.length} attempt(s); last: ${last?.message ?? 'none'}`, {
      engine: last?.engine,
      status: last?.status,
      body: last?.body,
      attempts: errors.length,
      retryable: false,
      hint: 'Inspect `errors` for each attempt; raise `retry.maxAttempts` or check the engines.',
      cause: last,
    });
    this.errors = errors;
  }
}

/** No engine could take the request (all removed, in cooldown, or draining) before its deadline. */
export class EngineUnavailableError extends InferenceError {
  static {
    CLASS_BRAND.set(EngineUnavailableError, Symbol.for('remote-inference-client.error.EngineUnavailableError'));
  }

  constructor(message: string, details: Omit<InferenceErrorDetails, 'retryable'> = {}) {
    super('ERR_ENGINE_UNAVAILABLE', message, { ...details, retryable: true });
  }
}

/** The kernel has no free local port for a new connection (EADDRNOTAVAIL / EADDRINUSE on bind). */
export class PortsExhaustedError extends InferenceError {
  static {
    CLASS_BRAND.set(PortsExhaustedError, Symbol.for('remote-inference-client.error.PortsExhaustedError'));
  }

  constructor(details: Omit<InferenceErrorDetails, 'retryable'> = {}) {
    super('ERR_PORTS_EXHAUSTED', `Ports exhausted: no free local port to reach ${details.engine ?? 'the engine'}`, {
      hint: 'Add source IPs (`sourceIps`), spread load over more processes or hosts, or lower the connection ceiling.',
      ...details,
      retryable: false,
    });
  }
}

/** The process hit its open-file limit (EMFILE) or the system's (ENFILE). */
export class TooManyOpenFilesError extends InferenceError {
  static {
    CLASS_BRAND.set(TooManyOpenFilesError, Symbol.for('remote-inference-client.error.TooManyOpenFilesError'));
  }

  constructor(details: Omit<InferenceErrorDetails, 'retryable'> = {}) {
    super('ERR_TOO_MANY_OPEN_FILES', 'Too many open files: the descriptor limit was reached', {
      hint: 'Raise `ulimit -n`, or spread connections over more processes (each socket costs one descriptor).',
      ...details,
      retryable: false,
    });
  }
}

/** `limits.maxQueued` was reached: the request was rejected instead of queued. */
export class QueueFullError extends InferenceError {
  static {
    CLASS_BRAND.set(QueueFullError, Symbol.for('remote-inference-client.error.QueueFullError'));
  }

  constructor(maxQueued: number) {
    super('ERR_QUEUE_FULL', `Admission queue is full (limits.maxQueued = ${maxQueued})`, {
      retryable: true,
      hint: 'Slow the producer down, or raise `limits.maxQueued`.',
    });
  }
}

/** The cluster-wide limiter (Redis) could not be reached and `limits.redis.onUnavailable` is `fail-closed`. */
export class LimiterUnavailableError extends InferenceError {
  static {
    CLASS_BRAND.set(LimiterUnavailableError, Symbol.for('remote-inference-client.error.LimiterUnavailableError'));
  }

  constructor(message: string, cause?: unknown) {
    super('ERR_LIMITER_UNAVAILABLE', message, {
      cause,
      retryable: true,
      hint: 'Check Redis, or set `limits.redis.onUnavailable: "fail-open"` to fall back to local limits.',
    });
  }
}

/**
 * Something that is none of the above failed (a bug here or in a dependency, or a test seam that threw a plain
 * value). `cause` holds what was thrown. Not retried.
 */
export class UnexpectedError extends InferenceError {
  static {
    CLASS_BRAND.set(UnexpectedError, Symbol.for('remote-inference-client.error.UnexpectedError'));
  }

  constructor(cause: unknown) {
    super('ERR_UNEXPECTED', `Unexpected failure: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
      retryable: false,
      hint: 'Please report it with the cause attached.',
    });
  }
}

/** The client was closed; no new request is accepted. */
export class ClientClosedError extends InferenceError {
  static {
    CLASS_BRAND.set(ClientClosedError, Symbol.for('remote-inference-client.error.ClientClosedError'));
  }

  constructor() {
    super('ERR_CLIENT_CLOSED', 'The client is closed', { retryable: false });
  }
}

const CONNECTION_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ENOTCONN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
]);

/**
 * Maps a transport-level error (undici or the OS) to this package's errors. The one place undici codes are read.
 * `afterResponseBytes` says whether any response byte had arrived: that decides whether the failure is retryable.
 */
export function mapTransportError(
  error: unknown,
  context: {
    engine: string;
    afterResponseBytes: boolean;
    timeouts?: { ttfbMs?: number | undefined; idleMs?: number | undefined; connectMs?: number | undefined };
  },
): InferenceError {
  if (isInferenceError(error)) return error;
  const code = (error as { code?: string } | undefined)?.code;
  const message = (error as Error | undefined)?.message ?? String(error);
  const engine = context.engine;
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return new TimeoutError('connect', context.timeouts?.connectMs ?? 0, { engine, cause: error });
    case 'UND_ERR_HEADERS_TIMEOUT':
      return new TimeoutError('ttfb', context.timeouts?.ttfbMs ?? 0, { engine, cause: error });
    case 'UND_ERR_BODY_TIMEOUT':
      return new TimeoutError('idle', context.timeouts?.idleMs ?? 0, { engine, cause: error });
    case 'UND_ERR_ABORTED':
    case 'ABORT_ERR':
      return new AbortError(message, { engine, cause: error });
    case 'EADDRNOTAVAIL':
    case 'EADDRINUSE':
      return new PortsExhaustedError({ engine, cause: error });
    case 'EMFILE':
    case 'ENFILE':
      return new TooManyOpenFilesError({ engine, cause: error });
    case 'UND_ERR_INVALID_ARG':
    case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
    case 'UND_ERR_NOT_SUPPORTED':
      // undici refused an argument (from `new Client` or a request): the options are wrong, not the engine, so it
      // must never count as a connection failure (three of them used to put a healthy engine in cooldown).
      return new InvalidOptionsError(`undici rejected an option: ${message}`, {
        engine,
        cause: error,
        hint: 'An option reached undici unvalidated: fix it, and please report it so it is checked up front.',
      });
    default:
      break;
  }
  // A JavaScript error without a code (a stack overflow, a TypeError in a parser or a sink) is a bug on this side,
  // not a lost connection: as ERR_CONNECTION it was counted against a healthy engine, and mid-response it became
  // ERR_STREAM_INTERRUPTED, which `resume` re-sends (the audit's 300k-id event).
  if (code === undefined && isProgrammingError(error)) return new UnexpectedError(error);
  if (isUnacceptableResponse(error)) {
    // The engine answered, with something undici refuses: not a lost connection, and not re-sent (it may have
    // taken the request: a server that sent an unsolicited 100 did the whole generation 7 times per request).
    return new ConnectionError(
      `The engine sent a response undici does not accept (${message}: an unsolicited 100 Continue, or a 101 without an upgrade)`,
      undefined,
      {
        engine,
        cause: error,
        hint: 'Check what sits between this client and the engine (a proxy answering 100 Continue).',
      },
    );
  }
  if (context.afterResponseBytes) {
    return new StreamInterruptedError(`Connection lost mid-response: ${message}`, { engine, cause: error });
  }
  if (code !== undefined && CONNECTION_CODES.has(code)) {
    return new ConnectionError(`${message} (${code})`, code, { engine, cause: error });
  }
  return new ConnectionError(message, code, { engine, cause: error });
}

/**
 * @internal undici's verdict on a response it refuses after reading it: `bad response` (a 100 Continue nobody asked
 * for, or bytes with no request in flight) and `bad upgrade` (a 101 without an upgrade request). The socket error
 * it raises looks like a lost connection (UND_ERR_SOCKET), but the server answered.
 */
export function isUnacceptableResponse(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return code === 'UND_ERR_SOCKET' && (message === 'bad response' || message === 'bad upgrade');
}

function isProgrammingError(error: unknown): boolean {
  return (
    error instanceof RangeError ||
    error instanceof TypeError ||
    error instanceof SyntaxError ||
    error instanceof ReferenceError
  );
}
