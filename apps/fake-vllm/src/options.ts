import { readFileSync } from 'node:fs';
import { FakeVllmConfigError } from './errors.js';
import { type FaultProfile, resolveFaultProfile } from './faults.js';
import { type OutputLengthOptions, type ResolvedOutputLengths, resolveOutputLengths } from './output-lengths.js';
import { isPresetName, PRESETS, type PresetName } from './presets/presets.js';
import { DEFAULT_MAX_REQUEST_TOKENS } from './request-bounds.js';
import { checkRouteSources, type FakeRouteSource } from './routes/load-routes.js';
import { DEFAULT_VOCAB_SIZE } from './tokens.js';

/** The latency model of one engine. Settable at start and live over the control channel. */
export interface LatencyOptions {
  /** Fixed part of time to first token, from admission to the first token. @default 50 (ms) */
  ttftMs?: number;
  /** Prefill cost added to TTFT per prompt token. @default 0.02 (ms per token) */
  prefillMsPerToken?: number;
  /** Duration of one decode step with one running sequence: the inter-token latency. @default 12 (ms) */
  itlMs?: number;
  /** Relative standard deviation of each step's duration and of TTFT (Gaussian, seeded). @default 0.1 */
  jitter?: number;
  /**
   * Step duration multiplier when all `maxNumSeqs` slots run, interpolated linearly from 1 at one running
   * sequence: `1 + (loadSlowdown - 1) * (running - 1) / (maxNumSeqs - 1)`. @default 1 (no slowdown)
   */
  loadSlowdown?: number;
}

/** An engine's capacity. Settable at start (per engine with `perEngine`) and live over the control channel. */
export interface CapacityOptions {
  /**
   * Running sequence slots (vLLM's `--max-num-seqs`); further requests wait in a FIFO queue. A request with `n`
   * choices takes `n` slots. @default 256 (sequences)
   */
  maxNumSeqs?: number;
  /**
   * Size of the KV-cache block pool, in blocks of 16 tokens (vLLM's `num_gpu_blocks`). Running sequences hold
   * blocks (`vllm:kv_cache_usage_perc` is their share); the prefix cache keeps freed full blocks in the rest and
   * evicts the least recently freed when it runs out. The fake never preempts: running sequences are not limited
   * by it, and usage reads at most 1. @default 32768 (blocks, 524,288 tokens)
   */
  kvCacheBlocks?: number;
}

/** Everything that shapes one engine. */
export interface EngineOptions extends LatencyOptions, CapacityOptions {
  /** Model name served in `/v1/models` and checked on requests. @default "fake-model" */
  model?: string;
  /**
   * Automatic prefix caching (vLLM V1's default, `--enable-prefix-caching`): a prompt's full 16-token blocks
   * already in the engine's cache are not prefilled again (prefill is charged for the uncached part only). Off,
   * every prompt token is prefilled and `vllm:prefix_cache_hits` stays 0. @default true
   */
  enablePrefixCaching?: boolean;
  /**
   * How long generations run when `max_tokens` does not end them first: `max-tokens` (every sequence runs to
   * `max_tokens`), or a long-tailed `lognormal` or `pareto` length drawn from the prompt and the request's seed
   * (the same on every engine and every run). See {@link OutputLengthOptions}. @default { distribution: "max-tokens" }
   */
  outputLengths?: OutputLengthOptions;
  /** Waiting requests beyond which new ones get 429. @default Infinity */
  maxWaiting?: number;
  /** Context length: prompt + max_tokens must fit. @default 32768 (tokens) */
  maxModelLen?: number;
  /** Vocabulary size of the toy tokenizer. @default 32000 */
  vocabSize?: number;
  /** Seed of generated tokens (when a request sets no `seed`), jitter and fault rolls. @default 0 */
  seed?: number;
  /** Per-token probability of ending with EOS (`finish_reason: "stop"`). @default 0 — exactly max_tokens */
  eosProbability?: number;
  /** Idle keep-alive connections are closed after this long, as uvicorn does. @default 5000 (ms) */
  keepAliveTimeoutMs?: number;
  /** Send `Keep-Alive: timeout=N` on responses. uvicorn does not. @default false */
  keepAliveHint?: boolean;
  /** `listen()` backlog. @default net.core.somaxconn (the most the kernel allows), else 511 */
  backlog?: number;
  /**
   * `/health` (and `/ping`) answer 503 for this long after start while generation already answers: an engine that
   * reports itself unhealthy. vLLM itself never does this while starting (see `startupMs`). @default 0 (ms)
   */
  readyAfterMs?: number;
  /**
   * The engine refuses connections (ECONNREFUSED) for this long after start, then serves: vLLM binds its port
   * but starts uvicorn only once the engine is built (`openai/api_server.py`), so early clients are refused, not
   * answered 503. The ready line and `startFakeVllm()` return at once, with the URLs. Not applied with
   * `sharePort`: the shared socket listens in the parent from the start. @default 0 (ms)
   */
  startupMs?: number;
  /** Fault rates, or a built-in profile name (`none`, `chaos`, `idle-close-race`). @default none */
  faultProfile?: FaultProfile | string;
  /**
   * A request whose body has not fully arrived this long after its headers gets 408 and its connection is closed,
   * so a client trickling a body cannot hold a connection forever. 0 disables it. @default 30000 (ms)
   */
  requestBodyTimeoutMs?: number;
  /**
   * Most tokens one request may ask to generate: prompts x `n` x `max_tokens`. Larger requests get 400 before
   * anything is allocated; a 50-byte body must not be able to claim gigabytes. @default 16777216 (tokens)
   */
  maxRequestTokens?: number;
  /**
   * Routes a trainer adds to the vLLM servers it launches, served by this engine: `'skyrl'` (NovaSky-AI/SkyRL's
   * `/skyrl/v1/generate`, `/skyrl/v1/load_lora_adapter`, `/fetch_weights`, its router's `/finish_session`; see
   * `skyrlRoutes()` to set its options). Matched after the built-in routes and before `routes`. @default 'none'
   */
  preset?: PresetName;
  /**
   * Extra routes, matched before the built-in ones (so they add a route or replace one) and before the 404. Each
   * is a {@link FakeRoute} (a handler reusing the engine, faults and sessions through its context, or a static
   * `response`), or the path of an ES module exporting `routes`. Only paths and static routes can reach
   * `processes` > 0 children. @default none
   */
  routes?: readonly FakeRouteSource[];
  /**
   * Serve vLLM's dev-mode routes (pause/resume, sleep/wake_up, weight transfer, collective_rpc, cache resets), which
   * vLLM serves only with `VLLM_SERVER_DEV_MODE=1`. On by default so RL rigs work; off, they answer 404 as vLLM.
   * @default true
   */
  devMode?: boolean;
}

/** What may differ between the engines of one fleet: `perEngine[i]` overrides the shared options for engine i. */
export type PerEngineOptions = Pick<
  EngineOptions,
  | 'ttftMs'
  | 'prefillMsPerToken'
  | 'itlMs'
  | 'jitter'
  | 'loadSlowdown'
  | 'maxNumSeqs'
  | 'maxWaiting'
  | 'kvCacheBlocks'
  | 'enablePrefixCaching'
  | 'faultProfile'
  | 'startupMs'
>;

/** The fields {@link PerEngineOptions} may set. */
export const PER_ENGINE_FIELDS = [
  'ttftMs',
  'prefillMsPerToken',
  'itlMs',
  'jitter',
  'loadSlowdown',
  'maxNumSeqs',
  'maxWaiting',
  'kvCacheBlocks',
  'enablePrefixCaching',
  'faultProfile',
  'startupMs',
] as const;

/** Which engines of the fleet a group serves, and what differs between them. */
export interface EnginePlacement {
  /** Overrides by engine index in the whole fleet. @default [] */
  perEngine?: readonly PerEngineOptions[];
  /** Fleet index of each engine this group serves, in its own order. @default 0, 1, ... */
  engines?: readonly number[];
}

/** How an engine restarts (control plane `restartEngine`). */
export interface RestartOptions {
  /**
   * How long the engine is down: connects are refused (ECONNREFUSED) this long after the restart, then it serves
   * again on the same port. @default 1000 (ms)
   */
  downMs?: number;
}

/** Applies the default to {@link RestartOptions} and validates them; returns `downMs`. */
export function resolveRestartOptions(restart: RestartOptions = {}): number {
  check(
    typeof restart === 'object' && restart !== null && !Array.isArray(restart),
    'restart',
    'an object such as { downMs: 1000 }',
    restart,
  );
  for (const field of Object.keys(restart)) {
    if (field !== 'downMs') {
      throw new FakeVllmConfigError(`Unknown restart option \`${field}\`; known: downMs`, { field });
    }
  }
  const downMs = restart.downMs ?? 1000;
  check(timerMs(downMs), 'downMs', `a number of milliseconds in 0..${MAX_TIMER_MS}`, downMs);
  return downMs;
}

/** Options of {@link startFakeVllm}. */
export interface FakeVllmOptions extends EngineOptions {
  /**
   * Engines of different speeds and sizes in one fleet: entry i overrides the shared options for engine i (e.g.
   * `[{}, { itlMs: 24, ttftMs: 100 }]`: engine 1 at half speed; `[{ maxNumSeqs: 64 }]`: engine 0 with 64 slots).
   * Engines without an entry use the shared options. At most `engines` entries. @default []
   */
  perEngine?: readonly PerEngineOptions[];
  /** Address engines and the control channel listen on. @default "127.0.0.1" */
  host?: string;
  /** Port of the first engine; 0 lets the kernel choose (no port races). Engine i uses port+i when non-zero. @default 0 */
  port?: number;
  /** Engines to start, each its own server, port and scheduler. @default 1 */
  engines?: number;
  /** Child processes to spread engines over; 0 runs them in this process. @default 0 */
  processes?: number;
  /**
   * Serve ONE engine address from all `processes`: they accept on one shared listening socket, each running its own
   * engine (scheduler). For more connections to one address than one process's file limit allows. @default false
   */
  sharePort?: boolean;
  /**
   * Scheduling priority (nice, -20..19) of the child processes. A load test that runs fake-vllm on the cores of the
   * client it measures sets this > 0, so the client, not the stand-in server, gets the CPU when both want it.
   * Applies when `processes` > 0. @default 0
   */
  nice?: number;
  /**
   * Run the child processes under Linux's SCHED_IDLE policy (set with util-linux `chrt`): they get a core only when
   * no normal task wants it, and a normal task that wakes up preempts them at once. Stronger than `nice: 19`, under
   * which a load generator sharing the cores still waited behind the server's time slice (measured at 10,000
   * streams on 2 cores: client event-loop lag p99 10.4 and 13.2 ms at nice 19, 8.4 and 8.6 ms with SCHED_IDLE).
   * Applies when `processes` > 0; Linux only. @default false
   */
  idleScheduling?: boolean;
  /** The WebSocket control and telemetry channel. `false` disables it. @default { host: "127.0.0.1", port: 0 } */
  control?: ControlChannelOptions | false;
}

/** Options of the control channel. */
export interface ControlChannelOptions {
  /** @default "127.0.0.1" — loopback only unless changed on purpose */
  host?: string;
  /** @default 0 */
  port?: number;
  /** Required as `?token=` or `Authorization: Bearer` when set. @default none */
  token?: string;
  /** Period of the pushed stats. @default 1000 (ms) */
  statsIntervalMs?: number;
}

/** Engine options with every default applied. */
export type ResolvedEngineOptions = Required<Omit<EngineOptions, 'faultProfile' | 'outputLengths'>> & {
  faultProfile: FaultProfile | string;
  outputLengths: ResolvedOutputLengths;
};
export type { FakeRouteSource };

/** Startup options with every default applied. */
export interface ResolvedFakeVllmOptions extends ResolvedEngineOptions {
  host: string;
  port: number;
  engines: number;
  processes: number;
  sharePort: boolean;
  nice: number;
  idleScheduling: boolean;
  perEngine: PerEngineOptions[];
  control: Required<Omit<ControlChannelOptions, 'token'>> & { token: string | undefined; enabled: boolean };
}

function readSomaxconn(): number {
  try {
    const value = Number.parseInt(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim(), 10);
    return Number.isFinite(value) && value > 0 ? value : 511;
  } catch {
    return 511;
  }
}

function check(condition: boolean, field: string, expected: string, got: unknown): void {
  if (!condition) {
    throw new FakeVllmConfigError(
      `Expected \`${field}\` to be ${expected}, got \`${JSON.stringify(got) ?? String(got)}\``,
      { field },
    );
  }
}

/** Node's longest timer: a longer delay fires after 1 ms instead (TimeoutOverflowWarning). */
const MAX_TIMER_MS = 2_147_483_647;

const nonNegative = (value: unknown) => typeof value === 'number' && Number.isFinite(value) && value >= 0;
const positiveInteger = (value: unknown) => Number.isInteger(value) && (value as number) > 0;
const timerMs = (value: unknown) => nonNegative(value) && (value as number) <= MAX_TIMER_MS;

const LATENCY_FIELDS = ['ttftMs', 'prefillMsPerToken', 'itlMs', 'jitter', 'loadSlowdown'];
const CAPACITY_FIELDS = ['maxNumSeqs', 'kvCacheBlocks'];

/** Validates capacity options that may arrive live (only the given fields). */
export function validateCapacityOptions(capacity: CapacityOptions): void {
  check(
    typeof capacity === 'object' && capacity !== null && !Array.isArray(capacity),
    'capacity',
    'an object',
    capacity,
  );
  for (const field of Object.keys(capacity)) {
    if (!CAPACITY_FIELDS.includes(field)) {
      throw new FakeVllmConfigError(`Unknown capacity option \`${field}\`; known: ${CAPACITY_FIELDS.join(', ')}`, {
        field,
      });
    }
  }
  checkCapacityValues(capacity);
}

function checkCapacityValues(capacity: CapacityOptions): void {
  if (capacity.maxNumSeqs !== undefined) {
    check(positiveInteger(capacity.maxNumSeqs), 'maxNumSeqs', 'a whole number > 0', capacity.maxNumSeqs);
  }
  if (capacity.kvCacheBlocks !== undefined) {
    check(
      positiveInteger(capacity.kvCacheBlocks),
      'kvCacheBlocks',
      'a whole number of 16-token blocks > 0',
      capacity.kvCacheBlocks,
    );
  }
}

/** Validates latency options that may arrive live (only the given fields). */
export function validateLatencyOptions(latency: LatencyOptions): void {
  check(typeof latency === 'object' && latency !== null && !Array.isArray(latency), 'latency', 'an object', latency);
  // Live updates are copied field by field into the engine's options: anything else would change them unchecked.
  for (const field of Object.keys(latency)) {
    if (!LATENCY_FIELDS.includes(field)) {
      throw new FakeVllmConfigError(`Unknown latency option \`${field}\`; known: ${LATENCY_FIELDS.join(', ')}`, {
        field,
      });
    }
  }
  checkLatencyValues(latency);
}

function checkLatencyValues(latency: LatencyOptions): void {
  for (const field of ['prefillMsPerToken', 'jitter'] as const) {
    const value = latency[field];
    if (value !== undefined) check(nonNegative(value), field, 'a finite number >= 0', value);
  }
  if (latency.ttftMs !== undefined) {
    check(timerMs(latency.ttftMs), 'ttftMs', `a number of milliseconds in 0..${MAX_TIMER_MS}`, latency.ttftMs);
  }
  if (latency.itlMs !== undefined) {
    check(
      timerMs(latency.itlMs) && latency.itlMs >= 0.1,
      'itlMs',
      `a number of milliseconds in 0.1..${MAX_TIMER_MS}`,
      latency.itlMs,
    );
  }
  if (latency.loadSlowdown !== undefined) {
    check(nonNegative(latency.loadSlowdown) && latency.loadSlowdown >= 1, 'loadSlowdown', '>= 1', latency.loadSlowdown);
  }
}

/** Applies defaults to engine options and validates them. */
export function resolveEngineOptions(options: EngineOptions = {}): ResolvedEngineOptions {
  const resolved: ResolvedEngineOptions = {
    ttftMs: options.ttftMs ?? 50,
    prefillMsPerToken: options.prefillMsPerToken ?? 0.02,
    itlMs: options.itlMs ?? 12,
    jitter: options.jitter ?? 0.1,
    loadSlowdown: options.loadSlowdown ?? 1,
    model: options.model ?? 'fake-model',
    maxNumSeqs: options.maxNumSeqs ?? 256,
    maxWaiting: options.maxWaiting ?? Number.POSITIVE_INFINITY,
    maxModelLen: options.maxModelLen ?? 32_768,
    vocabSize: options.vocabSize ?? DEFAULT_VOCAB_SIZE,
    seed: options.seed ?? 0,
    eosProbability: options.eosProbability ?? 0,
    keepAliveTimeoutMs: options.keepAliveTimeoutMs ?? 5000,
    keepAliveHint: options.keepAliveHint ?? false,
    backlog: options.backlog ?? readSomaxconn(),
    readyAfterMs: options.readyAfterMs ?? 0,
    startupMs: options.startupMs ?? 0,
    faultProfile: options.faultProfile ?? 'none',
    requestBodyTimeoutMs: options.requestBodyTimeoutMs ?? 30_000,
    maxRequestTokens: options.maxRequestTokens ?? DEFAULT_MAX_REQUEST_TOKENS,
    preset: options.preset ?? 'none',
    routes: checkRouteSources(options.routes),
    devMode: options.devMode ?? true,
    kvCacheBlocks: options.kvCacheBlocks ?? 32_768,
    enablePrefixCaching: options.enablePrefixCaching ?? true,
    outputLengths: { distribution: 'max-tokens' },
  };
  check(Number.isInteger(resolved.seed), 'seed', 'an integer', resolved.seed);
  resolved.outputLengths = resolveOutputLengths(options.outputLengths, resolved.seed);
  checkCapacityValues(resolved);
  check(
    typeof resolved.enablePrefixCaching === 'boolean',
    'enablePrefixCaching',
    'true or false',
    resolved.enablePrefixCaching,
  );
  check(typeof resolved.devMode === 'boolean', 'devMode', 'true or false', resolved.devMode);
  checkLatencyValues(resolved);
  check(isPresetName(resolved.preset), 'preset', `one of ${Object.keys(PRESETS).join(', ')}`, resolved.preset);
  check(typeof resolved.model === 'string' && resolved.model.length > 0, 'model', 'a non-empty string', resolved.model);
  check(
    typeof resolved.maxWaiting === 'number' && resolved.maxWaiting >= 0,
    'maxWaiting',
    'a number >= 0',
    resolved.maxWaiting,
  );
  check(positiveInteger(resolved.maxModelLen), 'maxModelLen', 'a whole number > 0', resolved.maxModelLen);
  check(
    Number.isInteger(resolved.vocabSize) && resolved.vocabSize >= 1024,
    'vocabSize',
    'a whole number >= 1024',
    resolved.vocabSize,
  );
  check(
    typeof resolved.eosProbability === 'number' && resolved.eosProbability >= 0 && resolved.eosProbability < 1,
    'eosProbability',
    'within [0, 1)',
    resolved.eosProbability,
  );
  check(
    timerMs(resolved.keepAliveTimeoutMs),
    'keepAliveTimeoutMs',
    `a number of milliseconds in 0..${MAX_TIMER_MS}`,
    resolved.keepAliveTimeoutMs,
  );
  check(typeof resolved.keepAliveHint === 'boolean', 'keepAliveHint', 'true or false', resolved.keepAliveHint);
  check(positiveInteger(resolved.backlog), 'backlog', 'a whole number > 0', resolved.backlog);
  check(nonNegative(resolved.readyAfterMs), 'readyAfterMs', 'a number >= 0', resolved.readyAfterMs);
  check(timerMs(resolved.startupMs), 'startupMs', `a number of milliseconds in 0..${MAX_TIMER_MS}`, resolved.startupMs);
  check(
    timerMs(resolved.requestBodyTimeoutMs),
    'requestBodyTimeoutMs',
    `a number of milliseconds in 0..${MAX_TIMER_MS} (0 = no limit)`,
    resolved.requestBodyTimeoutMs,
  );
  check(
    positiveInteger(resolved.maxRequestTokens),
    'maxRequestTokens',
    'a whole number > 0',
    resolved.maxRequestTokens,
  );
  try {
    resolveFaultProfile(resolved.faultProfile);
  } catch (error) {
    if (!(error instanceof FakeVllmConfigError)) throw error;
    throw new FakeVllmConfigError(`Invalid \`faultProfile\`: ${error.message}`, {
      cause: error,
      field: 'faultProfile',
    });
  }
  return resolved;
}

/** Applies defaults to {@link FakeVllmOptions} and validates them. */
export function resolveFakeVllmOptions(options: FakeVllmOptions = {}): ResolvedFakeVllmOptions {
  const engine = resolveEngineOptions(options);
  check(
    options.control === undefined ||
      options.control === false ||
      (typeof options.control === 'object' && options.control !== null && !Array.isArray(options.control)),
    'control',
    'false or an object of control channel options',
    options.control,
  );
  const control = options.control === false ? undefined : (options.control ?? {});
  const resolved: ResolvedFakeVllmOptions = {
    ...engine,
    host: options.host ?? '127.0.0.1',
    port: options.port ?? 0,
    engines: options.engines ?? 1,
    processes: options.processes ?? 0,
    sharePort: options.sharePort ?? false,
    nice: options.nice ?? 0,
    idleScheduling: options.idleScheduling ?? false,
    perEngine: [],
    control: {
      enabled: control !== undefined,
      host: control?.host ?? '127.0.0.1',
      port: control?.port ?? 0,
      token: control?.token,
      statsIntervalMs: control?.statsIntervalMs ?? 1000,
    },
  };
  check(typeof resolved.host === 'string' && resolved.host !== '', 'host', 'an IP address or host name', resolved.host);
  check(
    Number.isInteger(resolved.port) && resolved.port >= 0 && resolved.port < 65536,
    'port',
    'a whole number in 0..65535',
    resolved.port,
  );
  check(typeof resolved.sharePort === 'boolean', 'sharePort', 'true or false', resolved.sharePort);
  check(positiveInteger(resolved.engines), 'engines', 'a whole number > 0', resolved.engines);
  resolved.perEngine = resolvePerEngine(options.perEngine, engine, resolved.engines);
  check(
    Number.isInteger(resolved.processes) && resolved.processes >= 0,
    'processes',
    'a whole number >= 0',
    resolved.processes,
  );
  check(
    Number.isInteger(resolved.nice) && resolved.nice >= -20 && resolved.nice <= 19,
    'nice',
    'a whole number in -20..19',
    resolved.nice,
  );
  check(typeof resolved.idleScheduling === 'boolean', 'idleScheduling', 'true or false', resolved.idleScheduling);
  check(
    typeof resolved.control.host === 'string' && resolved.control.host !== '',
    'control.host',
    'an IP address or host name',
    resolved.control.host,
  );
  check(
    Number.isInteger(resolved.control.port) && resolved.control.port >= 0 && resolved.control.port < 65536,
    'control.port',
    'a whole number in 0..65535',
    resolved.control.port,
  );
  check(
    resolved.control.token === undefined ||
      (typeof resolved.control.token === 'string' && resolved.control.token !== ''),
    'control.token',
    'a non-empty string',
    resolved.control.token,
  );
  check(
    positiveInteger(resolved.control.statsIntervalMs) && resolved.control.statsIntervalMs <= MAX_TIMER_MS,
    'control.statsIntervalMs',
    'a whole number > 0',
    resolved.control.statsIntervalMs,
  );
  return resolved;
}

/**
 * Validates `perEngine`: at most one entry per engine, each an object of {@link PER_ENGINE_FIELDS} whose values
 * pass the same checks as the shared options (errors name `perEngine[i].field`).
 */
function resolvePerEngine(
  perEngine: readonly PerEngineOptions[] | undefined,
  shared: ResolvedEngineOptions,
  engines: number,
): PerEngineOptions[] {
  if (perEngine === undefined) return [];
  check(Array.isArray(perEngine), 'perEngine', 'an array of per-engine option objects', perEngine);
  check(perEngine.length <= engines, 'perEngine', `at most \`engines\` (${engines}) entries`, perEngine.length);
  return perEngine.map((entry, index) => {
    const field = `perEngine[${index}]`;
    check(typeof entry === 'object' && entry !== null && !Array.isArray(entry), field, 'an object', entry);
    for (const key of Object.keys(entry)) {
      if (!(PER_ENGINE_FIELDS as readonly string[]).includes(key)) {
        throw new FakeVllmConfigError(
          `Unknown option \`${field}.${key}\`; an engine of a fleet may set: ${PER_ENGINE_FIELDS.join(', ')}`,
          { field: 'perEngine' },
        );
      }
    }
    try {
      resolveEngineOptions({ ...shared, ...entry });
    } catch (error) {
      if (!(error instanceof FakeVllmConfigError) || error.field === undefined) throw error;
      throw new FakeVllmConfigError(error.message.replace(`\`${error.field}\``, `\`${field}.${error.field}\``), {
        cause: error,
        field: 'perEngine',
      });
    }
    return { ...entry };
  });
}
