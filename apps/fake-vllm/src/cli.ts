#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FakeVllmConfigError } from './errors.js';
import { parseFaultProfile } from './faults.js';
import { openFileLimit } from './open-file-limit.js';
import { type FakeVllmOptions, resolveFakeVllmOptions } from './options.js';
import { startFakeVllm } from './start.js';

type Kind = 'string' | 'number' | 'boolean';
/** Every flag: [kind, option key, help]. Each is also read from FAKE_VLLM_<FLAG> (e.g. FAKE_VLLM_ITL_MS). */
const FLAGS: Record<
  string,
  [
    Kind,
    (
      | keyof FakeVllmOptions
      | 'config'
      | 'on-sigterm'
      | 'drain-timeout-ms'
      | 'control-port'
      | 'control-host'
      | 'control-token'
      | 'no-control'
      | 'no-dev-mode'
      | 'no-enable-prefix-caching'
      | 'help'
    ),
    string,
  ]
> = {
  host: ['string', 'host', 'Address to listen on (default 127.0.0.1)'],
  port: ['number', 'port', 'Port of the first engine; 0 = kernel-chosen (default 0)'],
  engines: ['number', 'engines', 'Number of engines (default 1)'],
  processes: ['number', 'processes', 'Child processes to spread engines over; 0 = this process (default 0)'],
  'share-port': ['boolean', 'sharePort', 'All --processes accept on ONE port (one engine address, several processes)'],
  nice: ['number', 'nice', 'CPU priority (nice -20..19) of the --processes children (default 0)'],
  'idle-scheduling': [
    'boolean',
    'idleScheduling',
    'Run the --processes children under SCHED_IDLE (Linux, util-linux chrt): CPU only when nothing else wants it',
  ],
  model: ['string', 'model', 'Served model name (default fake-model)'],
  'max-num-seqs': ['number', 'maxNumSeqs', 'Running slots per engine (default 256)'],
  'kv-cache-blocks': ['number', 'kvCacheBlocks', 'KV-cache pool per engine, in 16-token blocks (default 32768)'],
  'enable-prefix-caching': ['boolean', 'enablePrefixCaching', 'Automatic prefix caching (default on, as vLLM V1)'],
  'no-enable-prefix-caching': [
    'boolean',
    'no-enable-prefix-caching',
    'Prefill every prompt token; vllm:prefix_cache_hits stays 0',
  ],
  'output-lengths': [
    'string',
    'outputLengths',
    'Long-tailed lengths as JSON, e.g. \'{"distribution":"lognormal","medianTokens":200,"sigma":1}\' (default: max_tokens)',
  ],
  'per-engine': [
    'string',
    'perEngine',
    'Per-engine overrides as a JSON array, e.g. \'[{},{"itlMs":24,"ttftMs":100},{"maxNumSeqs":64}]\'',
  ],
  'max-waiting': ['number', 'maxWaiting', 'Waiting requests before 429 (default unlimited)'],
  'max-model-len': ['number', 'maxModelLen', 'Context length (default 32768)'],
  'ttft-ms': ['number', 'ttftMs', 'Base time to first token in ms (default 50)'],
  'prefill-ms-per-token': ['number', 'prefillMsPerToken', 'Prefill ms per prompt token (default 0.02)'],
  'itl-ms': ['number', 'itlMs', 'Inter-token latency (decode step) in ms (default 12)'],
  jitter: ['number', 'jitter', 'Relative std-dev of step and TTFT (default 0.1)'],
  'load-slowdown': ['number', 'loadSlowdown', 'Step multiplier at a full batch (default 1)'],
  seed: ['number', 'seed', 'Seed of tokens, jitter and faults (default 0)'],
  'eos-probability': ['number', 'eosProbability', 'Per-token EOS probability (default 0)'],
  'keep-alive-timeout-ms': ['number', 'keepAliveTimeoutMs', 'Idle keep-alive close in ms (default 5000)'],
  'keep-alive-hint': ['boolean', 'keepAliveHint', 'Send Keep-Alive: timeout= (uvicorn does not)'],
  backlog: ['number', 'backlog', 'listen() backlog (default net.core.somaxconn)'],
  'ready-after-ms': ['number', 'readyAfterMs', '/health answers 503 for this long after start (default 0)'],
  'startup-ms': [
    'number',
    'startupMs',
    'Connections are refused for this long after start, as vLLM before its engine is built (default 0)',
  ],
  'fault-profile': ['string', 'faultProfile', 'Built-in name (none, chaos, idle-close-race), JSON, or @file.json'],
  'request-body-timeout-ms': [
    'number',
    'requestBodyTimeoutMs',
    'A body not fully received this long after its headers gets 408 (default 30000; 0 = no limit)',
  ],
  'max-request-tokens': ['number', 'maxRequestTokens', 'Most prompts x n x max_tokens per request (default 16777216)'],
  preset: ['string', 'preset', "A trainer's own routes on top of vLLM's: skyrl (SkyRL's server and router)"],
  routes: [
    'string',
    'routes',
    'Extra routes: ES module paths (comma-separated) exporting `routes`; a --config file may also list static routes',
  ],
  'dev-mode': [
    'boolean',
    'devMode',
    "Serve vLLM's VLLM_SERVER_DEV_MODE routes (pause, sleep, weights, rpc, caches); on by default",
  ],
  'no-dev-mode': [
    'boolean',
    'no-dev-mode',
    'Answer the dev-mode routes with 404, as vLLM without VLLM_SERVER_DEV_MODE=1',
  ],
  config: ['string', 'config', 'JSON file of options (flags override it)'],
  'control-host': ['string', 'control-host', 'Control channel address (default 127.0.0.1)'],
  'control-port': ['number', 'control-port', 'Control channel port (default 0)'],
  'control-token': ['string', 'control-token', 'Token required on the control channel'],
  'no-control': ['boolean', 'no-control', 'Do not start the control channel'],
  'on-sigterm': ['string', 'on-sigterm', 'drain (let in-flight finish) or abort (default drain)'],
  'drain-timeout-ms': ['number', 'drain-timeout-ms', 'Longest drain on SIGTERM in ms (default 30000)'],
  help: ['boolean', 'help', 'Show this help'],
};

function usage(): string {
  const names = Object.entries(FLAGS).map(([flag, [kind]]) => `--${flag}${kind === 'boolean' ? '' : ` <${kind}>`}`);
  // The column follows the longest flag: a fixed width once ran `--request-body-timeout-ms <number>` into its text.
  const width = Math.max(...names.map((name) => name.length)) + 2;
  const lines = Object.values(FLAGS).map(([, , help], index) => `  ${names[index]!.padEnd(width)}${help}`);
  return `Usage: fake-vllm [flags]\n\nStarts fake vLLM engines and prints one JSON line when ready:\n  {"event":"ready","engines":[{"url":...}],"control":"ws://..."}\n\nFlags (each also read from FAKE_VLLM_<FLAG>, e.g. FAKE_VLLM_ITL_MS=10):\n${lines.join('\n')}\n`;
}

/** Node's longest timer: a longer delay fires after 1 ms instead. */
const MAX_TIMER_MS = 2_147_483_647;

/** Option keys a config file may set: every flag's option, plus what only a file can say. */
const CONFIG_KEYS = new Set<string>([
  ...Object.values(FLAGS)
    .map(([, key]) => key)
    .filter(
      (key) =>
        !['config', 'help', 'no-control', 'no-dev-mode', 'no-enable-prefix-caching'].includes(key) &&
        !key.startsWith('control-'),
    ),
  'control',
]);

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new FakeVllmConfigError(`Cannot read the \`--config\` file ${path}: ${(error as Error).message}`);
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (error) {
    throw new FakeVllmConfigError(`Expected the \`--config\` file ${path} to be JSON: ${(error as Error).message}`);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new FakeVllmConfigError(
      `Expected the \`--config\` file ${path} to hold a JSON object of options, got ${JSON.stringify(config)}`,
    );
  }
  for (const key of Object.keys(config)) {
    if (!CONFIG_KEYS.has(key)) {
      throw new FakeVllmConfigError(
        `Unknown option \`${key}\` in the \`--config\` file ${path}; known: ${[...CONFIG_KEYS].join(', ')}`,
      );
    }
  }
  return config as Record<string, unknown>;
}

/**
 * `--itl-ms -5` reads as two flags to parseArgs ("argument is ambiguous"): join a negative number to its flag, so
 * the value is parsed and then rejected with the range it must be in.
 */
function joinNegativeNumbers(argv: readonly string[]): string[] {
  const joined: string[] = [];
  for (let index = 0; index < argv.length; index++) {
    const arg = argv[index]!;
    const next = argv[index + 1];
    const flag = arg.startsWith('--') && !arg.includes('=') ? FLAGS[arg.slice(2)] : undefined;
    if (flag && flag[0] !== 'boolean' && next !== undefined && /^-\.?\d/.test(next)) {
      joined.push(`${arg}=${next}`);
      index++;
    } else joined.push(arg);
  }
  return joined;
}

/** Turns argv + environment into options; exported for tests. */
export function parseCli(
  argv: string[],
  env: NodeJS.ProcessEnv,
): {
  options: FakeVllmOptions;
  help: boolean;
  onSigterm: 'drain' | 'abort';
  drainTimeoutMs: number;
  /** Option key -> where its value came from (`--itl-ms`, `FAKE_VLLM_ITL_MS`, `itlMs` in file.json). */
  sources: Record<string, string>;
} {
  const { values } = parseArgs({
    args: joinNegativeNumbers(argv),
    options: Object.fromEntries(
      Object.entries(FLAGS).map(([flag, [kind]]) => [flag, { type: kind === 'boolean' ? 'boolean' : 'string' }]),
    ),
    strict: true,
  });
  const raw: Record<string, string | boolean | undefined> = {};
  /** How each given flag is named in messages: `--itl-ms`, or the environment variable it came from. */
  const labels: Record<string, string> = {};
  for (const flag of Object.keys(FLAGS)) {
    const variable = `FAKE_VLLM_${flag.toUpperCase().replaceAll('-', '_')}`;
    const envValue = env[variable];
    if (values[flag] !== undefined) {
      raw[flag] = values[flag];
      labels[flag] = `\`--${flag}\``;
    } else if (envValue !== undefined) {
      raw[flag] = FLAGS[flag]![0] === 'boolean' ? envValue === '1' || envValue === 'true' : envValue;
      labels[flag] = `\`${variable}\``;
    }
  }
  const configPath = raw.config === undefined ? undefined : String(raw.config);
  const options: Record<string, unknown> = configPath === undefined ? {} : readConfigFile(configPath);
  /** Option key (`itlMs`, `control.port`) -> how to name it where it came from. */
  const sources: Record<string, string> = {};
  for (const key of Object.keys(options)) sources[key] = `\`${key}\` in ${configPath}`;
  if (typeof options.control === 'object' && options.control !== null) {
    for (const key of Object.keys(options.control)) sources[`control.${key}`] = `\`control.${key}\` in ${configPath}`;
  }
  const numbers: Record<string, number> = {};
  for (const [flag, [kind, key]] of Object.entries(FLAGS)) {
    const value = raw[flag];
    if (value === undefined) continue;
    const label = labels[flag]!;
    sources[flag.startsWith('control-') ? `control.${flag.slice(8)}` : key] = label;
    if (kind === 'number') {
      const number = typeof value === 'string' && value.trim() !== '' ? Number(value) : Number.NaN;
      if (!Number.isFinite(number)) {
        throw new FakeVllmConfigError(`Expected ${label} to be a number, got \`${String(value)}\``);
      }
      numbers[flag] = number;
      options[key] = number;
    } else options[key] = value;
  }
  if (typeof raw.routes === 'string') {
    options.routes = raw.routes
      .split(',')
      .map((path) => path.trim())
      .filter((path) => path !== '');
  } else if (configPath !== undefined && Array.isArray(options.routes)) {
    // Module paths in a config file are relative to the file, not to where fake-vllm was started.
    options.routes = options.routes.map((route: unknown) =>
      typeof route === 'string' && !isAbsolute(route) && !route.startsWith('file:')
        ? resolve(dirname(configPath), route)
        : route,
    );
  }
  if (typeof raw['fault-profile'] === 'string') {
    options.faultProfile = parseFaultProfile(raw['fault-profile'], labels['fault-profile']!);
  }
  for (const flag of ['output-lengths', 'per-engine']) {
    const value = raw[flag];
    if (typeof value !== 'string') continue;
    try {
      options[FLAGS[flag]![1]] = JSON.parse(value);
    } catch (error) {
      throw new FakeVllmConfigError(
        `Expected ${labels[flag]} to be JSON, got \`${value}\` (${(error as Error).message})`,
      );
    }
  }
  if (raw['no-dev-mode'] === true) options.devMode = false;
  if (raw['no-enable-prefix-caching'] === true) options.enablePrefixCaching = false;
  if (raw['no-control'] === true) options.control = false;
  else if (
    raw['control-host'] !== undefined ||
    raw['control-port'] !== undefined ||
    raw['control-token'] !== undefined
  ) {
    const fromFile = typeof options.control === 'object' && options.control !== null ? options.control : {};
    options.control = {
      ...fromFile,
      ...(raw['control-host'] !== undefined ? { host: String(raw['control-host']) } : {}),
      ...(numbers['control-port'] !== undefined ? { port: numbers['control-port'] } : {}),
      ...(raw['control-token'] !== undefined ? { token: String(raw['control-token']) } : {}),
    };
  }
  const onSigterm = (raw['on-sigterm'] ?? 'drain') as string;
  if (onSigterm !== 'drain' && onSigterm !== 'abort') {
    throw new FakeVllmConfigError(`Expected ${labels['on-sigterm']} to be drain or abort, got \`${onSigterm}\``);
  }
  const drainTimeoutMs = numbers['drain-timeout-ms'] ?? 30_000;
  if (!(drainTimeoutMs >= 0 && drainTimeoutMs <= MAX_TIMER_MS)) {
    throw new FakeVllmConfigError(
      `Expected ${labels['drain-timeout-ms']} to be a number of milliseconds in 0..${MAX_TIMER_MS}, got \`${drainTimeoutMs}\``,
    );
  }
  for (const key of [
    'config',
    'on-sigterm',
    'drain-timeout-ms',
    'control-port',
    'control-host',
    'control-token',
    'no-control',
    'no-dev-mode',
    'no-enable-prefix-caching',
    'help',
  ]) {
    delete options[key];
  }
  try {
    resolveFakeVllmOptions(options as FakeVllmOptions);
  } catch (error) {
    throw nameTheSource(error, sources);
  }
  return {
    options: options as FakeVllmOptions,
    help: raw.help === true,
    onSigterm,
    drainTimeoutMs,
    sources,
  };
}

/** Rewrites an option error to name the flag, variable or config entry the value came from. */
function nameTheSource(error: unknown, sources: Record<string, string>): unknown {
  if (!(error instanceof FakeVllmConfigError) || error.field === undefined) return error;
  const source = sources[error.field];
  if (source === undefined) return error;
  return new FakeVllmConfigError(error.message.replace(`\`${error.field}\``, source), {
    cause: error,
    field: error.field,
  });
}

const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EADDRNOTAVAIL: 'address not available on this host',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'host name lookup failed',
  EMFILE: 'too many open files',
  ENFILE: "the system's file table is full",
};

/** The one line to print for a start failure the user can fix (a bad address, a port in use); else undefined. */
function startProblem(
  error: unknown,
  options: FakeVllmOptions,
  sources: Record<string, string>,
  fileLimit: number | undefined,
): string | undefined {
  if (error instanceof FakeVllmConfigError) return (nameTheSource(error, sources) as Error).message;
  const { code, address, port, listener } = (error ?? {}) as {
    code?: unknown;
    address?: unknown;
    port?: unknown;
    listener?: unknown;
  };
  if (typeof code !== 'string' || LISTEN_ERRORS[code] === undefined) return undefined;
  const control = typeof options.control === 'object' ? options.control : {};
  // The control channel marks its own listen errors; a port comparison blamed `--host` for `--control-host 8.8.8.8`
  // (both ports 0).
  const isControl = listener === 'control';
  const flags = isControl ? '`--control-host`, `--control-port`' : '`--host`, `--port`';
  const host = typeof address === 'string' ? address : isControl ? control.host : options.host;
  const where = `${host ?? '127.0.0.1'}:${port ?? (isControl ? control.port : options.port) ?? 0}`;
  if (code === 'EMFILE' || code === 'ENFILE') {
    // Not the address's fault: descriptors ran out (the up-front check in startFakeVllm leaves room for each engine's
    // socket and a connection, but routes modules and other code may open files too).
    const engines = sources.engines ?? '`--engines`';
    const limit =
      code === 'EMFILE'
        ? `this process's open-file limit${fileLimit === undefined ? '' : ` of ${fileLimit}`} (ulimit -n)`
        : 'fs.file-max';
    return `Cannot listen on ${where} (${engines}): ${LISTEN_ERRORS[code]} (${code}), past ${limit}; serve fewer engines per process (\`--processes\`) or raise the limit`;
  }
  return `Cannot listen on ${where} (${flags}): ${LISTEN_ERRORS[code]} (${code})`;
}

function exitWith(line: string): never {
  process.stderr.write(`fake-vllm: ${line.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parseCli>;
  try {
    parsed = parseCli(process.argv.slice(2), process.env);
  } catch (error) {
    exitWith(`${(error as Error).message} (fake-vllm --help lists every flag)`);
  }
  if (parsed.help) {
    process.stdout.write(usage());
    return;
  }
  let server: Awaited<ReturnType<typeof startFakeVllm>>;
  // Read now: once descriptors have run out, /proc/self/limits cannot be opened to say what the limit was.
  const fileLimit = openFileLimit();
  try {
    server = await startFakeVllm(parsed.options);
  } catch (error) {
    const problem = startProblem(error, parsed.options, parsed.sources, fileLimit);
    if (problem === undefined) throw error;
    exitWith(problem);
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(
      `fake-vllm: ${signal}: ${parsed.onSigterm === 'drain' ? 'draining' : 'aborting'} in-flight requests\n`,
    );
    await server.close({ mode: parsed.onSigterm, drainTimeoutMs: parsed.drainTimeoutMs });
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  // The ready line last: a supervisor that signals as soon as it reads it must find the handlers installed (before,
  // a SIGTERM sent right after the line killed the process with the default action instead of draining).
  process.stdout.write(
    `${JSON.stringify({ event: 'ready', engines: server.engines.map(({ url }) => ({ url })), control: server.control.url ?? null })}\n`,
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`fake-vllm: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
