import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { InvalidOptionsError } from '../errors.js';
import type { LimitsOptions } from '../limits/admission.js';
import type { RoutingPolicy, RoutingPolicyName } from '../routing/policies.js';
import { connectionBudget, ephemeralPortRange } from '../transport/port-budget.js';
import type { RequestStats } from './request-stats.js';

/** Per-request deadlines. Each is optional; none is hidden (no 300 s undici default). */
export interface TimeoutOptions {
  /** TCP connect. @default 10000 (ms) */
  connectMs?: number;
  /**
   * Request sent to the first byte that carries a result: the first data event of a stream (vLLM sends a stream's
   * `200` headers as soon as it accepts the request, before the first token), the headers of a whole response
   * (sent whole at the end). Either way it bounds queue + TTFT. @default 600000 (ms)
   */
  ttfbMs?: number;
  /** Longest silence between two body chunks. @default 600000 (ms) */
  idleMs?: number;
  /** Whole request including retries and waiting for admission. @default none */
  totalMs?: number;
}

/** When and how to retry. Only failures that are safe for generation are retried (see README). */
export interface RetryOptions {
  /** Attempts in all, the first included. @default 4 (three retries, as reference trainers) */
  maxAttempts?: number;
  /** First backoff cap; attempt n waits a uniform random time in [0, min(maxBackoffMs, baseBackoffMs * 2^(n-1))]. @default 100 (ms) */
  baseBackoffMs?: number;
  /** @default 2000 (ms) */
  maxBackoffMs?: number;
  /** Longest `Retry-After` honoured; longer ones fail the request instead of sleeping. @default 30000 (ms) */
  maxRetryAfterMs?: number;
  /**
   * Retry budget: retries per second may be at most this fraction of requests (those started in the last second or
   * those in flight, whichever is more) plus `minRetriesPerSecond`, so a failing fleet is not hammered. @default 0.2
   */
  budgetRatio?: number;
  /** @default 10 */
  minRetriesPerSecond?: number;
  /** Retry on another engine when one is available. @default true */
  failover?: boolean;
}

/** Connection pooling. */
export interface TransportOptions {
  /**
   * Connection ceiling per client across all engines. @default the smaller of 50000 and the port budget: ephemeral
   * ports x source IPs (with `sourceIps`) or x engines (without). A value above the budget is rejected.
   */
  maxConnections?: number;
  /** Connects in flight per engine at most (paces bursts so the server's accept queue never overflows). @default 256 */
  maxConnecting?: number;
  /**
   * Idle keep-alive of client sockets. Keep it below the server's (uvicorn/vLLM: 5000) so the client always closes
   * first. @default 3000 (ms)
   */
  keepAliveTimeoutMs?: number;
  /** Subtracted from a server's `Keep-Alive: timeout=` hint. @default 2000 (ms) */
  keepAliveTimeoutThresholdMs?: number;
  /** Longest keep-alive accepted from a hint. @default 60000 (ms) */
  keepAliveMaxTimeoutMs?: number;
  /** Use this thread's shared transport (true) or a private one. @default true */
  shared?: boolean;
  /**
   * Largest whole (non-streamed) 2xx response body; a larger one fails with `ERR_STREAM_PARSE` instead of growing
   * a buffer. @default 268435456 (256 MiB)
   */
  maxResponseBytes?: number;
  /**
   * Largest single stream event (SSE: until its blank line); a larger one fails with `ERR_STREAM_PARSE`. vLLM's
   * events are small, except a first chunk carrying `prompt_logprobs` of a long prompt. @default 67108864 (64 MiB)
   */
  maxEventBytes?: number;
}

/** Options of {@link RemoteInferenceClient}. */
export interface RemoteInferenceClientOptions {
  /** Engine endpoints, e.g. `['http://127.0.0.1:8000']`. At least one. */
  engines: readonly string[];
  /** Default model name for requests that set none. @default none (the engine's default) */
  model?: string;
  /** Sent as `Authorization: Bearer`. @default none */
  apiKey?: string;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
  timeouts?: TimeoutOptions;
  retry?: RetryOptions;
  transport?: TransportOptions;
  limits?: LimitsOptions;
  /** Engine choice: a built-in policy name or your own {@link RoutingPolicy}. @default "least-outstanding" */
  routing?: RoutingPolicyName | RoutingPolicy;
  /**
   * Local addresses new connections bind to, in turn: N addresses give N ephemeral-port spaces. Each must be
   * assigned to this host (any 127.0.0.0/8 address counts on Linux). @default [] (the kernel chooses)
   */
  sourceIps?: readonly string[];
  /** Called with every request's timing, cheap when absent. Also published on `diagnostics_channel`. */
  onRequestEnd?: (stats: RequestStats) => void;
  /** Engine health (passive cooldown, optional active checks). */
  health?: import('../routing/engine-health.js').HealthOptions;
  /**
   * Replaces the network for one attempt (the seam openai-node offers with `fetch`): admission, retries, resume,
   * health and the retry budget run as usual around it, so a test can script each attempt's outcome and count
   * attempts exactly. @default the pooled undici transport
   */
  sendAttempt?: import('../transport/attempt.js').SendAttempt;
}

/** Options with defaults applied. */
export interface ResolvedClientOptions {
  engines: string[];
  model: string | undefined;
  headers: Record<string, string>;
  timeouts: Required<Omit<TimeoutOptions, 'totalMs'>> & { totalMs: number | undefined };
  retry: Required<RetryOptions>;
  transport: Required<TransportOptions>;
  sourceIps: string[];
  /** Connections per engine at most, and whether that is the kernel's port budget (fail fast) or a user choice. */
  connectionsPerEngine: number;
  ceilingIsPortBudget: boolean;
}

function expect(condition: boolean, field: string, expected: string, got: unknown): void {
  if (!condition) throw new InvalidOptionsError(`Expected \`${field}\` to be ${expected}, got \`${show(got)}\``);
}

/** A value as a message shows it: JSON, except what JSON cannot say (`NaN`, `Infinity`, `undefined`, `10n`). */
function show(value: unknown): string {
  if (value === undefined || (typeof value === 'number' && !Number.isFinite(value))) return String(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  try {
    return JSON.stringify(value);
  } catch {
    return Object.prototype.toString.call(value); // a cycle
  }
}

const nonNegative = (value: unknown) => typeof value === 'number' && Number.isFinite(value) && value >= 0;
const positiveInteger = (value: unknown) => typeof value === 'number' && Number.isInteger(value) && value > 0;

/** Normalizes an engine endpoint to its origin (`http://host:port`), rejecting anything else. */
export function normalizeEngine(engine: unknown, field: string): string {
  expect(typeof engine === 'string' && engine.trim() !== '', field, 'an http(s) URL', engine);
  let url: URL;
  try {
    url = new URL((engine as string).trim());
  } catch {
    throw new InvalidOptionsError(`Expected \`${field}\` to be an http(s) URL, got \`${JSON.stringify(engine)}\``);
  }
  expect(url.protocol === 'http:' || url.protocol === 'https:', field, 'an http(s) URL', engine);
  expect(url.pathname === '/' || url.pathname === '', field, 'an origin without a path (the SDK adds /v1/...)', engine);
  // Only the origin is used: credentials or a query in the URL would be dropped without a word.
  expect(
    url.username === '' && url.password === '' && url.search === '' && url.hash === '',
    field,
    'an origin without credentials, query or fragment (pass a key as `apiKey` or `headers`)',
    `${url.protocol}//${url.username || url.password ? '<credentials>@' : ''}${url.host}${url.search ? '?<query>' : ''}`,
  );
  return url.origin;
}

/** Addresses assigned to this host; on Linux every 127.0.0.0/8 address is usable on `lo`. */
function isLocalAddress(address: string): boolean {
  if (process.platform === 'linux' && isIP(address) === 4 && address.startsWith('127.')) return true;
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) if (entry.address === address) return true;
  }
  return false;
}

/** Drops blanks and duplicates, and checks each address is assigned to this host. */
export function resolveSourceIps(sourceIps: readonly string[] | undefined): string[] {
  if (sourceIps === undefined) return [];
  expect(Array.isArray(sourceIps), 'sourceIps', 'an array of IP addresses', sourceIps);
  const unique: string[] = [];
  sourceIps.forEach((raw, index) => {
    expect(typeof raw === 'string', `sourceIps[${index}]`, 'a string', raw);
    const address = raw.trim();
    if (address === '' || unique.includes(address)) return;
    if (isIP(address) === 0 || !isLocalAddress(address)) {
      throw new InvalidOptionsError(
        `Expected \`sourceIps[${index}]\` to be an IPv4/IPv6 address assigned to this host, got \`${JSON.stringify(raw)}\``,
        { hint: 'List addresses from `ip addr` (on Linux any 127.x.y.z works for loopback engines).' },
      );
    }
    unique.push(address);
  });
  return unique;
}

/** Applies defaults to client options and validates them. */
export function resolveClientOptions(options: RemoteInferenceClientOptions): ResolvedClientOptions {
  expect(typeof options === 'object' && options !== null, 'options', 'an object', options);
  expect(
    Array.isArray(options.engines) && options.engines.length > 0,
    'engines',
    'a non-empty array of URLs',
    options.engines,
  );
  const engines = [...new Set(options.engines.map((engine, index) => normalizeEngine(engine, `engines[${index}]`)))];
  checkHeaders(options.headers, 'headers');
  if (options.apiKey !== undefined) {
    expect(
      typeof options.apiKey === 'string' && HEADER_VALUE.test(options.apiKey),
      'apiKey',
      'a string without CR, LF or control characters',
      '<redacted>',
    );
  }
  const timeouts = options.timeouts ?? {};
  const retry = options.retry ?? {};
  const transport = options.transport ?? {};
  const resolved: ResolvedClientOptions = {
    engines,
    model: options.model,
    headers: {
      ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
      ...Object.fromEntries(Object.entries(options.headers ?? {}).map(([key, value]) => [key.toLowerCase(), value])),
    },
    timeouts: {
      connectMs: timeouts.connectMs ?? 10_000,
      ttfbMs: timeouts.ttfbMs ?? 600_000,
      idleMs: timeouts.idleMs ?? 600_000,
      totalMs: timeouts.totalMs,
    },
    retry: {
      maxAttempts: retry.maxAttempts ?? 4,
      baseBackoffMs: retry.baseBackoffMs ?? 100,
      maxBackoffMs: retry.maxBackoffMs ?? 2000,
      maxRetryAfterMs: retry.maxRetryAfterMs ?? 30_000,
      budgetRatio: retry.budgetRatio ?? 0.2,
      minRetriesPerSecond: retry.minRetriesPerSecond ?? 10,
      failover: retry.failover ?? true,
    },
    transport: {
      maxConnections: transport.maxConnections ?? 50_000,
      maxConnecting: transport.maxConnecting ?? 256,
      keepAliveTimeoutMs: transport.keepAliveTimeoutMs ?? 3000,
      keepAliveTimeoutThresholdMs: transport.keepAliveTimeoutThresholdMs ?? 2000,
      keepAliveMaxTimeoutMs: transport.keepAliveMaxTimeoutMs ?? 60_000,
      shared: transport.shared ?? true,
      maxResponseBytes: transport.maxResponseBytes ?? 256 * 1024 * 1024,
      maxEventBytes: transport.maxEventBytes ?? 64 * 1024 * 1024,
    },
    sourceIps: resolveSourceIps(options.sourceIps),
    connectionsPerEngine: 0,
    ceilingIsPortBudget: false,
  };
  const range = ephemeralPortRange();
  if (range) {
    const budget = connectionBudget(range.size, resolved.sourceIps.length, engines.length);
    if (transport.maxConnections !== undefined && transport.maxConnections > budget) {
      throw new InvalidOptionsError(
        `Expected \`transport.maxConnections\` to be at most the port budget ${budget} (${range.size} ephemeral ports ${range.low}-${range.high} x ${resolved.sourceIps.length > 0 ? `${resolved.sourceIps.length} source IP(s)` : `${engines.length} engine(s)`}), got \`${transport.maxConnections}\``,
        {
          hint: 'Add source IPs (`sourceIps`), spread over more processes or hosts, or widen net.ipv4.ip_local_port_range.',
        },
      );
    }
    if (transport.maxConnections === undefined) {
      resolved.transport.maxConnections = Math.min(50_000, budget);
      resolved.ceilingIsPortBudget = budget <= 50_000;
    }
  }
  for (const field of ['maxResponseBytes', 'maxEventBytes'] as const) {
    expect(
      positiveInteger(resolved.transport[field]),
      `transport.${field}`,
      'a whole number of bytes >= 1',
      resolved.transport[field],
    );
  }
  // Without source IPs each engine has its own port range; with them the budget is shared, split evenly.
  resolved.connectionsPerEngine = Math.max(1, Math.floor(resolved.transport.maxConnections / engines.length));
  for (const field of ['connectMs', 'ttfbMs', 'idleMs'] as const) {
    expect(
      nonNegative(resolved.timeouts[field]),
      `timeouts.${field}`,
      'a number of ms >= 0 (0 = none)',
      resolved.timeouts[field],
    );
  }
  if (resolved.timeouts.totalMs !== undefined) {
    expect(
      typeof resolved.timeouts.totalMs === 'number' && resolved.timeouts.totalMs > 0,
      'timeouts.totalMs',
      'a number of ms > 0 (Infinity: no deadline)',
      resolved.timeouts.totalMs,
    );
  }
  expect(
    positiveInteger(resolved.retry.maxAttempts),
    'retry.maxAttempts',
    'a whole number >= 1',
    resolved.retry.maxAttempts,
  );
  for (const field of [
    'baseBackoffMs',
    'maxBackoffMs',
    'maxRetryAfterMs',
    'budgetRatio',
    'minRetriesPerSecond',
  ] as const) {
    expect(nonNegative(resolved.retry[field]), `retry.${field}`, 'a number >= 0', resolved.retry[field]);
  }
  expect(
    positiveInteger(resolved.transport.maxConnections),
    'transport.maxConnections',
    'a whole number > 0',
    resolved.transport.maxConnections,
  );
  expect(
    positiveInteger(resolved.transport.maxConnecting),
    'transport.maxConnecting',
    'a whole number > 0',
    resolved.transport.maxConnecting,
  );
  expect(
    nonNegative(resolved.transport.keepAliveTimeoutMs) && resolved.transport.keepAliveTimeoutMs >= 1000,
    'transport.keepAliveTimeoutMs',
    'a number of ms >= 1000 (below the server idle timeout, 5000 for vLLM)',
    resolved.transport.keepAliveTimeoutMs,
  );
  // undici rejects these only when a connection is created (UND_ERR_INVALID_ARG from `new Client`): every request
  // would then fail as if the engine were unreachable.
  expect(
    nonNegative(resolved.transport.keepAliveTimeoutThresholdMs),
    'transport.keepAliveTimeoutThresholdMs',
    'a number of ms >= 0',
    resolved.transport.keepAliveTimeoutThresholdMs,
  );
  expect(
    nonNegative(resolved.transport.keepAliveMaxTimeoutMs) && resolved.transport.keepAliveMaxTimeoutMs >= 1,
    'transport.keepAliveMaxTimeoutMs',
    'a number of ms >= 1',
    resolved.transport.keepAliveMaxTimeoutMs,
  );
  return resolved;
}

// RFC 9110 field-name token and field-value (no CR, LF or NUL): a CR/LF in a caller's value would otherwise reach
// undici, fail as a "connection" error and be counted against a healthy engine.
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Framing and connection headers belong to the transport: a caller's `content-length` that disagrees with the body
// made undici fail the request as a connection error, counted against the engine until it went into cooldown.
const FRAMING_HEADERS = new Set([
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'expect',
  'te',
  'trailer',
]);
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** Checks header names and values a caller supplied; `field` names where they came from. */
export function checkHeaders(headers: unknown, field: string): void {
  if (headers === undefined) return;
  expect(typeof headers === 'object' && headers !== null && !Array.isArray(headers), field, 'an object', headers);
  for (const [name, value] of Object.entries(headers as Record<string, unknown>)) {
    expect(HEADER_NAME.test(name), `${field} name`, 'an HTTP header name (a token)', name);
    expect(
      !FRAMING_HEADERS.has(name.toLowerCase()),
      `${field} name`,
      `a header the client does not set itself (it frames the body and manages connections: ${[...FRAMING_HEADERS].join(', ')} are refused)`,
      name,
    );
    expect(
      typeof value === 'string' && HEADER_VALUE.test(value),
      `${field}[${JSON.stringify(name)}]`,
      'a string without CR, LF or control characters',
      value,
    );
  }
}

/** The per-call options every request method takes, checked before the request is counted or sent. */
export interface CheckedRequestOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  sessionId?: string;
  priority?: number;
  headers?: Record<string, string>;
}

/** Rejects a caller's mistake in per-call options with a typed error, before anything is counted or sent. */
export function checkRequestOptions(options: CheckedRequestOptions): void {
  expect(typeof options === 'object' && options !== null, 'options', 'an object', options);
  const { signal, timeoutMs, sessionId, priority, headers } = options;
  if (signal !== undefined) {
    expect(signal instanceof AbortSignal, 'options.signal', 'an AbortSignal', Object.prototype.toString.call(signal));
  }
  if (timeoutMs !== undefined) {
    expect(
      typeof timeoutMs === 'number' && timeoutMs > 0 && !Number.isNaN(timeoutMs),
      'options.timeoutMs',
      'a number of ms > 0 (Infinity: no deadline)',
      timeoutMs,
    );
  }
  if (sessionId !== undefined) {
    expect(
      typeof sessionId === 'string' && HEADER_VALUE.test(sessionId),
      'options.sessionId',
      'a string without CR, LF or control characters (it is sent as the X-Session-ID header)',
      sessionId,
    );
  }
  if (priority !== undefined) {
    expect(typeof priority === 'number' && Number.isFinite(priority), 'options.priority', 'a finite number', priority);
  }
  checkHeaders(headers, 'options.headers');
}

/** Sets the client's default model on a body that names none; rejects a body that is not an object. */
export function withModel<T extends { model?: string }>(body: T, model: string | undefined): T {
  if (typeof body !== 'object' || body === null) {
    throw new InvalidOptionsError(`Expected the request body to be an object, got \`${JSON.stringify(body)}\``);
  }
  return body.model === undefined && model !== undefined ? { ...body, model } : body;
}

/** The JSON text of a request body, or a typed error naming what cannot be serialized (a cycle, a BigInt). */
export function serializeBody(body: unknown): string {
  try {
    return JSON.stringify(body);
  } catch (error) {
    throw new InvalidOptionsError(`Expected the request body to be JSON-serializable: ${(error as Error).message}`, {
      cause: error,
    });
  }
}
