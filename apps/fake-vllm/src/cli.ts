#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { FakeVllmConfigError } from './errors.js';
import type { FaultProfile } from './faults.js';
import type { FakeVllmOptions } from './options.js';
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
  model: ['string', 'model', 'Served model name (default fake-model)'],
  'max-num-seqs': ['number', 'maxNumSeqs', 'Running slots per engine (default 256)'],
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
  'fault-profile': ['string', 'faultProfile', 'Built-in name (none, chaos, idle-close-race), JSON, or @file.json'],
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
  const lines = Object.entries(FLAGS).map(([flag, [kind, , help]]) => {
    const name = `--${flag}${kind === 'boolean' ? '' : ` <${kind}>`}`;
    return `  ${name.padEnd(34)}${help}`;
  });
  return `Usage: fake-vllm [flags]\n\nStarts fake vLLM engines and prints one JSON line when ready:\n  {"event":"ready","engines":[{"url":...}],"control":"ws://..."}\n\nFlags (each also read from FAKE_VLLM_<FLAG>, e.g. FAKE_VLLM_ITL_MS=10):\n${lines.join('\n')}\n`;
}

function parseFaultProfile(value: string): FaultProfile | string {
  if (value.startsWith('@')) return JSON.parse(readFileSync(value.slice(1), 'utf8')) as FaultProfile;
  if (value.trim().startsWith('{')) return JSON.parse(value) as FaultProfile;
  return value;
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
} {
  const { values } = parseArgs({
    args: argv,
    options: Object.fromEntries(
      Object.entries(FLAGS).map(([flag, [kind]]) => [flag, { type: kind === 'boolean' ? 'boolean' : 'string' }]),
    ),
    strict: true,
  });
  const raw: Record<string, string | boolean | undefined> = {};
  for (const flag of Object.keys(FLAGS)) {
    const envValue = env[`FAKE_VLLM_${flag.toUpperCase().replaceAll('-', '_')}`];
    raw[flag] =
      values[flag] ??
      (envValue === undefined
        ? undefined
        : FLAGS[flag]![0] === 'boolean'
          ? envValue === '1' || envValue === 'true'
          : envValue);
  }
  const options: Record<string, unknown> = raw.config ? JSON.parse(readFileSync(String(raw.config), 'utf8')) : {};
  const numbers: Record<string, number> = {};
  for (const [flag, [kind, key]] of Object.entries(FLAGS)) {
    const value = raw[flag];
    if (value === undefined) continue;
    if (kind === 'number') {
      const number = Number(value);
      if (value === '' || !Number.isFinite(number)) {
        throw new FakeVllmConfigError(`Expected \`--${flag}\` to be a number, got \`${String(value)}\``);
      }
      numbers[flag] = number;
      options[key] = number;
    } else options[key] = value;
  }
  if (typeof raw['fault-profile'] === 'string') options.faultProfile = parseFaultProfile(raw['fault-profile']);
  if (raw['no-control'] === true) options.control = false;
  else if (
    raw['control-host'] !== undefined ||
    raw['control-port'] !== undefined ||
    raw['control-token'] !== undefined
  ) {
    options.control = {
      ...(raw['control-host'] !== undefined ? { host: String(raw['control-host']) } : {}),
      ...(numbers['control-port'] !== undefined ? { port: numbers['control-port'] } : {}),
      ...(raw['control-token'] !== undefined ? { token: String(raw['control-token']) } : {}),
    };
  }
  const onSigterm = (raw['on-sigterm'] ?? 'drain') as string;
  if (onSigterm !== 'drain' && onSigterm !== 'abort') {
    throw new FakeVllmConfigError(`Expected \`--on-sigterm\` to be drain or abort, got \`${onSigterm}\``);
  }
  for (const key of [
    'config',
    'on-sigterm',
    'drain-timeout-ms',
    'control-port',
    'control-host',
    'control-token',
    'no-control',
    'help',
  ]) {
    delete options[key];
  }
  return {
    options: options as FakeVllmOptions,
    help: raw.help === true,
    onSigterm,
    drainTimeoutMs: numbers['drain-timeout-ms'] ?? 30_000,
  };
}

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parseCli>;
  try {
    parsed = parseCli(process.argv.slice(2), process.env);
  } catch (error) {
    process.stderr.write(`fake-vllm: ${(error as Error).message}\n\n${usage()}`);
    process.exit(2);
  }
  if (parsed.help) {
    process.stdout.write(usage());
    return;
  }
  const server = await startFakeVllm(parsed.options);
  process.stdout.write(
    `${JSON.stringify({ event: 'ready', engines: server.engines.map(({ url }) => ({ url })), control: server.control.url ?? null })}\n`,
  );
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
}

main().catch((error: unknown) => {
  process.stderr.write(`fake-vllm: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
