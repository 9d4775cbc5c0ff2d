import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import YAML from 'yaml';

/**
 * Bad input or a machine/engine the sweep cannot run against: the message names what was wrong and how to fix it.
 * The CLI prints it without a stack and exits 2.
 */
export class SweepConfigError extends Error {
  override readonly name = 'SweepConfigError';
}

/** A length distribution for prompts or outputs, in tokens. */
export type LengthDistribution =
  | { kind: 'fixed'; value: number }
  | { kind: 'uniform'; min: number; max: number }
  | { kind: 'normal'; mean: number; stddev: number };

/** Everything the sweep can be told. Every field has a flag (see `--help`) and a config-file key. */
export interface SweepOptions {
  /** Concurrency steps. @default [500, 1000, 2000, 5000, 10000] */
  steps: number[];
  /** Real engines; none = start embedded fake-vllm engines. */
  targets: string[];
  model: string | undefined;
  apiKey: string | undefined;
  endpoint: 'generate' | 'completions' | 'chat';
  stream: boolean;
  promptTokens: LengthDistribution;
  outputTokens: LengthDistribution;
  /** Turns per session (sessions routed with affinity); 1 = independent requests. */
  sessionTurns: number;
  sourceIps: string[];
  /** fake-vllm fault profile name or JSON, set through its control channel. */
  faults: string | undefined;
  mode: 'sdk' | 'direct';
  /** Generate streams cut mid-way are resumed by the SDK (prompt + tokens so far) instead of failing. */
  resume: boolean;
  /** Slots are added over this long at the start of a step. */
  rampMs: number;
  warmupMs: number;
  measureMs: number;
  /** Stop when a step's error rate exceeds this. */
  maxErrorRate: number;
  /** SLO thresholds, e.g. `{ ttft_p99_ms: 2000 }`. */
  slo: Record<string, number>;
  /** Client worker processes; 0 = sized from cores, concurrency and the file limit. */
  workers: number;
  outDir: string;
  /** Embedded fake-vllm shape. */
  fake: { engines: number; processes: number; maxNumSeqs: number; ttftMs: number; itlMs: number; nice: number };
  quick: boolean;
  seed: number;
  /**
   * `closed` (default): steps are concurrency levels. Otherwise steps are arrival rates (requests/s) with this
   * inter-arrival distribution, capped at `maxConcurrency` in flight, scheduled against an absolute clock.
   */
  arrival: 'closed' | 'constant' | 'poisson' | 'gamma';
  /** Shape of the gamma distribution (1 = Poisson; < 1 burstier). */
  gammaShape: number;
  /** Open loop: requests in flight at most; arrivals beyond it are counted as `capped`, never queued. */
  maxConcurrency: number;
  /** Open loop: an arrival later than this behind its scheduled time is skipped and counted (bounded catch-up). */
  maxCatchUpMs: number;
}

export const FLAG_HELP: Record<string, string> = {
  steps: 'Comma-separated concurrency steps (default 500,1000,2000,5000,10000)',
  quick: 'Small, fast profile for CI and first contact (steps 50,200,500; ~1 min)',
  target: 'Engine URL; repeat or comma-separate for several (default: embedded fake-vllm)',
  model: 'Model name sent to real engines',
  'api-key': 'Bearer token for real engines',
  endpoint: 'generate | completions | chat (default generate)',
  stream: 'Stream responses (default on; --no-stream to disable)',
  'prompt-tokens': 'Prompt length: N, uniform:MIN:MAX or normal:MEAN:STDDEV (default 64)',
  'output-tokens': 'Output length, same forms (default 16)',
  'session-turns': 'Turns per multi-turn session, routed with session affinity (default 1)',
  'source-ips': 'Local source IPs for outbound connections: a,b,c or auto:N (127.0.0.2..)',
  faults: 'fake-vllm fault profile (none, chaos, idle-close-race, or JSON)',
  mode: 'sdk (remote-inference-client) | direct (plain undici, no SDK features) (default sdk)',
  resume: 'Resume generate streams cut mid-way (SDK `resume: true`) instead of failing them (default off)',
  'ramp-ms': "Time to add a step's slots (default 5000)",
  'warmup-ms': 'Excluded warmup after the ramp (default 3000)',
  'measure-ms': 'Steady-state measurement window (default 10000)',
  'max-error-rate': 'Stop when a step exceeds this error rate (default 0.05)',
  slo: 'SLO for the knee and goodput, e.g. ttft_p99_ms=2000,itl_p99_ms=400',
  workers: 'Client worker processes (default: sized automatically)',
  out: 'Output directory (default sweep-results/<timestamp>)',
  'fake-engines': 'Embedded fake engines (default: one per 500 slots of the peak step, at least 4)',
  'fake-processes': 'Processes hosting them (default 2)',
  'fake-max-num-seqs': 'Sequences a fake engine runs at once; more wait in its queue (default 256)',
  'fake-ttft-ms': 'Fake TTFT (default 500)',
  'fake-itl-ms': 'Fake inter-token latency (default 250)',
  'fake-nice':
    'CPU priority of the fake engine processes, 0..19 (default 19: on a shared host the client, which is measured, gets the CPU first)',
  seed: 'Seed of prompts and sampling (default 1)',
  arrival: 'closed (steps = concurrency) | constant | poisson | gamma (steps = requests/s) (default closed)',
  'gamma-shape': 'Gamma shape for --arrival gamma (default 0.5: burstier than Poisson)',
  'max-concurrency': 'Open loop: in-flight cap; arrivals beyond it are counted as capped (default 10000)',
  'max-catch-up-ms': 'Open loop: arrivals later than this are skipped and counted (default 1000)',
  config: 'JSON or YAML file with any of these options (flags override it)',
  help: 'Show this help',
};

function parseLength(text: string, flag: string): LengthDistribution {
  const [kind, a, b] = text.split(':');
  const number = (value: string | undefined) => {
    const parsed = Number(value);
    if (value === undefined || !Number.isFinite(parsed) || parsed < 0) {
      throw new SweepConfigError(
        `Expected \`--${flag}\` to be N, uniform:MIN:MAX or normal:MEAN:STDDEV, got \`${text}\``,
      );
    }
    return parsed;
  };
  if (kind === 'uniform') return { kind, min: number(a), max: number(b) };
  if (kind === 'normal') return { kind, mean: number(a), stddev: number(b) };
  return { kind: 'fixed', value: number(kind) };
}

function expandSourceIps(text: string): string[] {
  if (text.startsWith('auto:')) {
    const count = Number(text.slice(5));
    if (!Number.isInteger(count) || count < 1 || count > 250)
      throw new SweepConfigError(`Expected \`--source-ips auto:N\` with N in 1..250, got \`${text}\``);
    return Array.from({ length: count }, (_, index) => `127.0.0.${index + 2}`);
  }
  return text
    .split(',')
    .map((ip) => ip.trim())
    .filter(Boolean);
}

/** Parses argv (and an optional config file) into options. Throws with the flag named on bad input. */
export function parseSweepArgs(argv: string[]): { options: SweepOptions; help: boolean } {
  const { values } = parseArgs({
    args: argv,
    allowNegative: true,
    options: Object.fromEntries(
      Object.keys(FLAG_HELP).map((flag) => [
        flag,
        {
          type: ['quick', 'stream', 'help', 'resume'].includes(flag) ? 'boolean' : 'string',
          ...(flag === 'target' ? { multiple: true } : {}),
        },
      ]),
    ) as never,
    strict: true,
  }) as { values: Record<string, string | string[] | boolean | undefined> };
  const file: Record<string, unknown> =
    typeof values.config === 'string'
      ? (YAML.parse(readFileSync(values.config, 'utf8')) as Record<string, unknown>)
      : {};
  const get = (flag: string): unknown =>
    values[flag] ?? file[flag] ?? file[flag.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase())];
  const quick = get('quick') === true;
  const number = (flag: string, fallback: number): number => {
    const raw = get(flag);
    if (raw === undefined) return fallback;
    const parsed = Number(raw);
    if (!Number.isFinite(parsed) || parsed < 0)
      throw new SweepConfigError(`Expected \`--${flag}\` to be a number >= 0, got \`${String(raw)}\``);
    return parsed;
  };
  const stepsRaw = get('steps');
  const steps =
    stepsRaw === undefined
      ? quick
        ? [50, 200, 500]
        : [500, 1000, 2000, 5000, 10000]
      : String(stepsRaw).split(',').map(Number);
  if (steps.some((step) => !Number.isInteger(step) || step < 1))
    throw new SweepConfigError(`Expected \`--steps\` to be whole numbers >= 1, got \`${String(stepsRaw)}\``);
  const targetsRaw = get('target');
  const targets = (Array.isArray(targetsRaw) ? targetsRaw : targetsRaw === undefined ? [] : [String(targetsRaw)])
    .flatMap((target) => String(target).split(','))
    .filter(Boolean);
  const endpoint = String(get('endpoint') ?? 'generate');
  if (endpoint !== 'generate' && endpoint !== 'completions' && endpoint !== 'chat')
    throw new SweepConfigError(`Expected \`--endpoint\` to be generate, completions or chat, got \`${endpoint}\``);
  const mode = String(get('mode') ?? 'sdk');
  if (mode !== 'sdk' && mode !== 'direct')
    throw new SweepConfigError(`Expected \`--mode\` to be sdk or direct, got \`${mode}\``);
  const arrival = String(get('arrival') ?? 'closed');
  if (!['closed', 'constant', 'poisson', 'gamma'].includes(arrival)) {
    throw new SweepConfigError(`Expected \`--arrival\` to be closed, constant, poisson or gamma, got \`${arrival}\``);
  }
  const slo: Record<string, number> = {};
  const sloRaw = get('slo');
  if (sloRaw !== undefined) {
    for (const pair of String(sloRaw).split(',')) {
      const [key, value] = pair.split('=');
      if (!key || !/^(ttft|itl|tpot|e2e)_p(50|90|99|99\.9)_ms$/.test(key) || !Number.isFinite(Number(value))) {
        throw new SweepConfigError(
          `Expected \`--slo\` entries like ttft_p99_ms=2000 (metrics ttft, itl, tpot, e2e; p50/p90/p99/p99.9), got \`${pair}\``,
        );
      }
      slo[key] = Number(value);
    }
  }
  const options: SweepOptions = {
    steps,
    targets,
    model: get('model') as string | undefined,
    apiKey: get('api-key') as string | undefined,
    endpoint,
    stream: get('stream') !== false,
    promptTokens: parseLength(String(get('prompt-tokens') ?? '64'), 'prompt-tokens'),
    outputTokens: parseLength(String(get('output-tokens') ?? '16'), 'output-tokens'),
    sessionTurns: Math.max(1, Math.floor(number('session-turns', 1))),
    sourceIps: get('source-ips') === undefined ? [] : expandSourceIps(String(get('source-ips'))),
    faults: get('faults') as string | undefined,
    mode,
    resume: get('resume') === true,
    rampMs: number('ramp-ms', quick ? 1500 : 5000),
    warmupMs: number('warmup-ms', quick ? 1000 : 3000),
    measureMs: number('measure-ms', quick ? 4000 : 10_000),
    maxErrorRate: number('max-error-rate', 0.05),
    slo: Object.keys(slo).length > 0 ? slo : { ttft_p99_ms: 2000, itl_p99_ms: 1000 },
    workers: Math.floor(number('workers', 0)),
    outDir: String(get('out') ?? `sweep-results/${new Date().toISOString().replaceAll(':', '-').slice(0, 19)}`),
    fake: {
      // Real fleets run ~256-512 sequences per engine; a few huge engines would deliver unrealistically large
      // synchronized bursts (every stream of an engine gets its token in the same step). With 256 running
      // sequences per engine and one engine per 500 slots of the peak step, the fleet runs half the peak at once
      // and queues the rest inside the engines (no bytes sent), as an oversubscribed real fleet does.
      engines: Math.max(1, Math.floor(number('fake-engines', Math.max(4, Math.ceil(Math.max(...steps) / 500))))),
      processes: Math.floor(number('fake-processes', 2)),
      maxNumSeqs: Math.max(1, Math.floor(number('fake-max-num-seqs', 256))),
      ttftMs: number('fake-ttft-ms', 500),
      itlMs: number('fake-itl-ms', 250),
      nice: number('fake-nice', 19),
    },
    quick,
    seed: Math.floor(number('seed', 1)),
    arrival: arrival as SweepOptions['arrival'],
    gammaShape: number('gamma-shape', 0.5),
    maxConcurrency: Math.max(1, Math.floor(number('max-concurrency', 10_000))),
    maxCatchUpMs: number('max-catch-up-ms', 1000),
  };
  if (!Number.isInteger(options.fake.nice) || options.fake.nice > 19)
    throw new SweepConfigError(
      `Expected \`--fake-nice\` to be a whole number in 0..19, got \`${String(get('fake-nice'))}\``,
    );
  if (options.arrival === 'gamma' && !(options.gammaShape > 0))
    throw new SweepConfigError(`Expected \`--gamma-shape\` > 0, got \`${options.gammaShape}\``);
  if (options.resume && (options.endpoint !== 'generate' || options.mode !== 'sdk'))
    throw new SweepConfigError(
      '`--resume` works with `--endpoint generate` and `--mode sdk` (token-in/token-out resume)',
    );
  if (options.targets.length > 0 && options.faults)
    throw new SweepConfigError('`--faults` works with the embedded fake-vllm only (drop --target)');
  return { options, help: values.help === true };
}

/** The `--help` text. */
export function usage(): string {
  const lines = Object.entries(FLAG_HELP).map(([flag, help]) => `  --${flag.padEnd(22)}${help}`);
  return `Usage: load-sweep [flags]\n\nRamps concurrency through the steps against embedded fake-vllm engines (default) or --target engines,\nand writes summary.json, summary.csv, requests-*.jsonl and report.html to --out.\n\n${lines.join('\n')}\n`;
}
