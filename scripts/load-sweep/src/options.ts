import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { FakeVllmConfigError, type FaultProfile, parseFaultProfile, resolveFakeVllmOptions } from 'fake-vllm';
import YAML from 'yaml';
import { SweepConfigError } from './errors.js';
import { DEFAULT_SLO, parseSlo } from './slo.js';

export { SweepConfigError } from './errors.js';

/** A length distribution for prompts or outputs, in tokens. */
export type LengthDistribution =
  | { kind: 'fixed'; value: number }
  | { kind: 'uniform'; min: number; max: number }
  | { kind: 'normal'; mean: number; stddev: number }
  /** Long-tailed: `round(median x exp(sigma x Z))`, Z ~ N(0, 1), within 1..max (fake-vllm's `outputLengths` rule). */
  | { kind: 'lognormal'; median: number; sigma: number; max: number }
  /** Long-tailed: `floor(scale / U^(1/alpha))`, U ~ U(0, 1), within 1..max (fake-vllm's `outputLengths` rule). */
  | { kind: 'pareto'; scale: number; alpha: number; max: number };

/**
 * `--scenario rollout-step`: the SDK options a step runs with. `baseline` is SkyRL's router and semaphore (round robin,
 * a fixed 512 per engine: the whole batch is bound to engines at t = 0), `least-outstanding` this SDK's previous
 * default (least outstanding, a fixed 512), `late-binding` its default now: least outstanding with
 * `limits.perEngine.adaptive`.
 */
export type RolloutPolicy = 'baseline' | 'least-outstanding' | 'late-binding';
export const ROLLOUT_POLICIES: readonly RolloutPolicy[] = ['baseline', 'least-outstanding', 'late-binding'];

/**
 * `--scenario rollout-step` with embedded engines: `uniform`; `slow-engine` (the last engine at half speed: TTFT and
 * ITL doubled, through fake-vllm's `perEngine`); `restart` (the last engine restarted through the control plane once
 * a quarter of the step's requests were answered).
 */
export type RolloutFleet = 'uniform' | 'slow-engine' | 'restart';
export const ROLLOUT_FLEETS: readonly RolloutFleet[] = ['uniform', 'slow-engine', 'restart'];

/** Everything the sweep can be told. Every field has a flag (see `--help`) and a config-file key. */
export interface SweepOptions {
  /**
   * `ramp` (default): steps are concurrency levels (or arrival rates), each measured in a window. `rollout-step`:
   * each step fires its N rollouts at once (a synchronous RL step) and waits for the last, once per policy.
   */
  scenario: 'ramp' | 'rollout-step';
  /** Concurrency steps; `rollout-step`: rollouts per step. @default [500, 1000, 2000, 5000, 10000] (rollout-step: [2048]) */
  steps: number[];
  /** `rollout-step`: the policies each step runs with, one row each. @default all three */
  policies: RolloutPolicy[];
  /** `rollout-step` with embedded engines: the fleet's shape. @default 'uniform' */
  fleet: RolloutFleet;
  /** `--fleet restart`: how long the restarted engine refuses connections. @default 1500 (ms) */
  restartDownMs: number;
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
  /** fake-vllm fault profile (a built-in name, JSON or `@file.json`, parsed by fake-vllm's own rule), set through its control channel. */
  faults: FaultProfile | string | undefined;
  mode: 'sdk' | 'direct';
  /** Generate streams cut mid-way are resumed by the SDK (prompt + tokens so far) instead of failing. */
  resume: boolean;
  /** Slots are added over this long at the start of a step. */
  rampMs: number;
  warmupMs: number;
  measureMs: number;
  /**
   * Deadline of one request, retries included (the SDK's `timeouts.totalMs`; `--mode direct`: the same, plus undici's
   * headers and body timeouts): a target that accepts and never answers fails requests instead of holding a step's
   * drain. @default 60000 (ms)
   */
  requestTimeoutMs: number;
  /** Stop when a step's error rate exceeds this. */
  maxErrorRate: number;
  /** SLO thresholds, e.g. `{ ttft_p99_ms: 2000 }`. */
  slo: Record<string, number>;
  /** Client worker processes; 0 = sized from cores, concurrency and the file limit. */
  workers: number;
  outDir: string;
  /** Embedded fake-vllm shape. */
  fake: {
    engines: number;
    processes: number;
    maxNumSeqs: number;
    ttftMs: number;
    itlMs: number;
    nice: number | 'idle';
  };
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
  scenario:
    'ramp (default: the concurrency ramp) | rollout-step (each step fires N rollouts at once and waits for the last)',
  steps: 'Comma-separated concurrency steps (default 500,1000,2000,5000,10000); rollout-step: rollouts per step (2048)',
  policy:
    'rollout-step: baseline (round robin, 512 per engine) | least-outstanding (512 per engine) | late-binding (adaptive caps); comma-separate to run several (default all three)',
  fleet:
    'rollout-step, embedded engines: uniform | slow-engine (the last at half speed) | restart (the last restarted mid-step) (default uniform)',
  'restart-down-ms': '--fleet restart: how long the restarted engine refuses connections (default 1500)',
  quick: 'Small, fast profile for CI and first contact (steps 50,200,500; ~1 min)',
  target: 'Engine URL; repeat or comma-separate for several (default: embedded fake-vllm)',
  model: 'Model name sent to real engines',
  'api-key': 'Bearer token for real engines',
  endpoint: 'generate | completions | chat (default generate)',
  stream: 'Stream responses (default on; --no-stream to disable)',
  'prompt-tokens':
    'Prompt length: N, uniform:MIN:MAX, normal:MEAN:STDDEV, lognormal:MEDIAN:SIGMA[:MAX] or pareto:SCALE:ALPHA[:MAX] (default 64)',
  'output-tokens': 'Output length (max_tokens), same forms (default 16; rollout-step: lognormal:16:0.8:64)',
  'session-turns': 'Turns per multi-turn session, routed with session affinity (default 1)',
  'source-ips': 'Local source IPs for outbound connections: a,b,c or auto:N (127.0.0.2..)',
  faults: 'fake-vllm fault profile (none, chaos, idle-close-race, JSON or @file.json)',
  mode: 'sdk (remote-inference-client) | direct (plain undici, no SDK features) (default sdk)',
  resume: 'Resume generate streams cut mid-way (SDK `resume: true`) instead of failing them (default off)',
  'ramp-ms': "Time to add a step's slots (default 5000)",
  'warmup-ms': 'Excluded warmup after the ramp (default 3000)',
  'measure-ms': 'Steady-state measurement window (default 10000)',
  'request-timeout-ms':
    'Deadline of one request, retries included; a step drains within it (default 60000, at most 3600000)',
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
    'CPU priority of the fake engine processes: idle (SCHED_IDLE: CPU only when the client does not want it) or nice 0..19 (default idle on Linux, 19 elsewhere)',
  seed: 'Seed of prompts and sampling (default 1)',
  arrival: 'closed (steps = concurrency) | constant | poisson | gamma (steps = requests/s) (default closed)',
  'gamma-shape': 'Gamma shape for --arrival gamma (default 0.5: burstier than Poisson)',
  'max-concurrency': 'Open loop: in-flight cap; arrivals beyond it are counted as capped (default 10000)',
  'max-catch-up-ms': 'Open loop: arrivals later than this are skipped and counted (default 1000)',
  config: 'JSON or YAML file with any of these options (flags override it)',
  help: 'Show this help',
};

/**
 * Upper bounds of every size the sweep can be told: each stops a typo (`--steps 1000000000` planned 2,000,000
 * engines and 50,506 worker processes) before anything starts. They are far above what one host can drive.
 */
export const LIMITS = {
  /** Steps in one sweep. */
  steps: 50,
  /** Concurrency (closed loop) or requests/s (open loop) of one step. */
  step: 200_000,
  /** Rollouts in one `rollout-step` step (each is planned and held until the step ends). */
  rollouts: 100_000,
  /** Requests of one `rollout-step` step: rollouts x `--session-turns`. */
  rolloutRequests: 1_000_000,
  fakeEngines: 1000,
  fakeProcesses: 64,
  fakeMaxNumSeqs: 100_000,
  workers: 256,
  /** Prompt and output length, tokens. */
  tokens: 100_000,
  sessionTurns: 1000,
  maxConcurrency: 1_000_000,
  sourceIps: 250,
  /** Any duration: ramp, warmup, measure, request deadline, catch-up. */
  durationMs: 3_600_000,
} as const;

/** Config-file keys (each flag, in kebab-case or camelCase). */
const CONFIG_KEYS = new Set(
  Object.keys(FLAG_HELP)
    .filter((flag) => flag !== 'config' && flag !== 'help')
    .flatMap((flag) => [flag, flag.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase())]),
);

function parseLength(text: string, flag: string): LengthDistribution {
  const [kind, a, b, c, ...rest] = text.split(':');
  const fail = (why: string) =>
    new SweepConfigError(
      `Expected \`--${flag}\` to be N, uniform:MIN:MAX or normal:MEAN:STDDEV (or lognormal:MEDIAN:SIGMA[:MAX], pareto:SCALE:ALPHA[:MAX]) (tokens, 1..${LIMITS.tokens}), got \`${text}\`${why}`,
    );
  const number = (value: string | undefined, min: number, max: number = LIMITS.tokens) => {
    const parsed = Number(value);
    if (value === undefined || value.trim() === '' || !Number.isFinite(parsed) || parsed < min || parsed > max)
      throw fail('');
    return parsed;
  };
  if (kind === 'uniform' && c === undefined) {
    const min = number(a, 1);
    const max = number(b, 1);
    if (min > max) throw fail(': MIN is above MAX');
    return { kind, min, max };
  }
  if (kind === 'normal' && c === undefined) return { kind, mean: number(a, 1), stddev: number(b, 0) };
  if ((kind === 'lognormal' || kind === 'pareto') && rest.length === 0) {
    // SIGMA and ALPHA are shapes, not tokens: > 0 and at most 10 (sigma 10 puts p99 at 10^10 x the median).
    const first = number(a, 1);
    const shape = number(b, Number.MIN_VALUE, 10);
    const max = c === undefined ? LIMITS.tokens : number(c, 1);
    if (first > max) throw fail(`: ${kind === 'lognormal' ? 'MEDIAN' : 'SCALE'} is above MAX`);
    return kind === 'lognormal'
      ? { kind, median: first, sigma: shape, max }
      : { kind, scale: first, alpha: shape, max };
  }
  if (a !== undefined) throw fail('');
  return { kind: 'fixed', value: number(kind, 1) };
}

function expandSourceIps(text: string): string[] {
  if (text.startsWith('auto:')) {
    const count = Number(text.slice(5));
    if (!Number.isInteger(count) || count < 1 || count > LIMITS.sourceIps)
      throw new SweepConfigError(`Expected \`--source-ips auto:N\` with N in 1..${LIMITS.sourceIps}, got \`${text}\``);
    return Array.from({ length: count }, (_, index) => `127.0.0.${index + 2}`);
  }
  const ips = text
    .split(',')
    .map((ip) => ip.trim())
    .filter(Boolean);
  const bad = ips.find((ip) => isIP(ip) === 0);
  if (bad !== undefined || ips.length === 0 || ips.length > LIMITS.sourceIps)
    throw new SweepConfigError(
      `Expected \`--source-ips\` to be 1..${LIMITS.sourceIps} comma-separated IP addresses or auto:N, got \`${bad ?? text}\``,
    );
  return ips;
}

function readConfig(path: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = YAML.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new SweepConfigError(
      `Cannot read the \`--config\` file ${path}: ${(error as Error).message.split('\n')[0]} (expected JSON or YAML)`,
    );
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new SweepConfigError(
      `Expected the \`--config\` file ${path} to hold a mapping of options (like {"steps": "500,1000"}), got ${Array.isArray(parsed) ? 'a list' : JSON.stringify(parsed)}`,
    );
  for (const key of Object.keys(parsed))
    if (!CONFIG_KEYS.has(key))
      throw new SweepConfigError(
        `Unknown option \`${key}\` in the \`--config\` file ${path}; see --help for the flags`,
      );
  return parsed as Record<string, unknown>;
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
  const file: Record<string, unknown> = typeof values.config === 'string' ? readConfig(values.config) : {};
  const get = (flag: string): unknown =>
    values[flag] ?? file[flag] ?? file[flag.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase())];
  const quick = get('quick') === true;
  /** A number flag within [min, max] (whole when `integer`), or `fallback` when absent. */
  const number = (flag: string, fallback: number, min: number, max: number, integer = false): number => {
    const raw = get(flag);
    if (raw === undefined) return fallback;
    const parsed = typeof raw === 'number' || (typeof raw === 'string' && raw.trim() !== '') ? Number(raw) : Number.NaN;
    if (!Number.isFinite(parsed) || parsed < min || parsed > max || (integer && !Number.isInteger(parsed)))
      throw new SweepConfigError(
        `Expected \`--${flag}\` to be a ${integer ? 'whole number' : 'number'} in ${min}..${max}, got \`${String(raw)}\``,
      );
    return parsed;
  };
  const scenario = String(get('scenario') ?? 'ramp');
  if (scenario !== 'ramp' && scenario !== 'rollout-step')
    throw new SweepConfigError(`Expected \`--scenario\` to be ramp or rollout-step, got \`${scenario}\``);
  const rollouts = scenario === 'rollout-step';
  const stepsRaw = get('steps');
  const steps =
    stepsRaw === undefined
      ? rollouts
        ? quick
          ? [1024]
          : [2048]
        : quick
          ? [50, 200, 500]
          : [500, 1000, 2000, 5000, 10000]
      : String(stepsRaw).split(',').map(Number);
  if (steps.length > LIMITS.steps || steps.some((step) => !Number.isInteger(step) || step < 1 || step > LIMITS.step))
    throw new SweepConfigError(
      `Expected \`--steps\` to be at most ${LIMITS.steps} whole numbers in 1..${LIMITS.step}, got \`${String(stepsRaw)}\``,
    );
  if (rollouts && steps.some((step) => step > LIMITS.rollouts))
    throw new SweepConfigError(
      `Expected \`--steps\` with \`--scenario rollout-step\` to be rollouts per step in 1..${LIMITS.rollouts}, got \`${String(stepsRaw)}\``,
    );
  const policyRaw = get('policy');
  if (policyRaw !== undefined && !rollouts)
    throw new SweepConfigError('`--policy` works with `--scenario rollout-step` only');
  const policies =
    policyRaw === undefined
      ? [...ROLLOUT_POLICIES]
      : String(policyRaw)
          .split(',')
          .map((policy) => policy.trim());
  if (
    policies.length === 0 ||
    policies.some((policy) => !ROLLOUT_POLICIES.includes(policy as RolloutPolicy)) ||
    new Set(policies).size !== policies.length
  )
    throw new SweepConfigError(
      `Expected \`--policy\` to be one or more of ${ROLLOUT_POLICIES.join(', ')}, comma-separated, each once, got \`${String(policyRaw)}\``,
    );
  const fleetRaw = get('fleet');
  const fleet = String(fleetRaw ?? 'uniform');
  if (!ROLLOUT_FLEETS.includes(fleet as RolloutFleet))
    throw new SweepConfigError(`Expected \`--fleet\` to be ${ROLLOUT_FLEETS.join(', ')}, got \`${fleet}\``);
  if (fleetRaw !== undefined && !rollouts)
    throw new SweepConfigError('`--fleet` works with `--scenario rollout-step` only');
  const targetsRaw = get('target');
  const targets = (Array.isArray(targetsRaw) ? targetsRaw : targetsRaw === undefined ? [] : [String(targetsRaw)])
    .flatMap((target) => String(target).split(','))
    .filter(Boolean);
  for (const target of targets) {
    let url: URL | undefined;
    try {
      url = new URL(target);
    } catch {}
    if (url?.protocol !== 'http:' && url?.protocol !== 'https:')
      throw new SweepConfigError(`Expected \`--target\` to be an http(s) URL, got \`${target}\``);
  }
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
  const sloRaw = get('slo');
  const faultsRaw = get('faults');
  let faults: FaultProfile | string | undefined;
  if (faultsRaw !== undefined) {
    try {
      faults = parseFaultProfile(typeof faultsRaw === 'string' ? faultsRaw : JSON.stringify(faultsRaw), '`--faults`');
    } catch (error) {
      if (error instanceof FakeVllmConfigError) throw new SweepConfigError(error.message);
      throw error;
    }
  }
  const duration = (flag: string, fallback: number) => number(flag, fallback, 0, LIMITS.durationMs);
  const maxNumSeqs = number('fake-max-num-seqs', 256, 1, LIMITS.fakeMaxNumSeqs, true);
  const options: SweepOptions = {
    scenario,
    steps,
    policies: policies as RolloutPolicy[],
    fleet: fleet as RolloutFleet,
    restartDownMs: number('restart-down-ms', 1500, 0, LIMITS.durationMs),
    targets,
    model: get('model') === undefined ? undefined : String(get('model')),
    apiKey: get('api-key') === undefined ? undefined : String(get('api-key')),
    endpoint,
    stream: get('stream') !== false,
    promptTokens: parseLength(String(get('prompt-tokens') ?? '64'), 'prompt-tokens'),
    outputTokens: parseLength(
      String(get('output-tokens') ?? (rollouts ? 'lognormal:16:0.8:64' : '16')),
      'output-tokens',
    ),
    sessionTurns: number('session-turns', 1, 1, LIMITS.sessionTurns, true),
    sourceIps: get('source-ips') === undefined ? [] : expandSourceIps(String(get('source-ips'))),
    faults,
    mode,
    resume: get('resume') === true,
    rampMs: duration('ramp-ms', quick ? 1500 : 5000),
    warmupMs: duration('warmup-ms', quick ? 1000 : 3000),
    measureMs: number('measure-ms', quick ? 4000 : 10_000, 100, LIMITS.durationMs),
    // A rollout step queues most of its batch in the client (late binding) or in the engines: a request's deadline
    // counts from when it was sent, so the last of 2,048 waits behind the rest.
    requestTimeoutMs: number('request-timeout-ms', rollouts ? 600_000 : 60_000, 1, LIMITS.durationMs),
    maxErrorRate: number('max-error-rate', 0.05, 0, 1),
    slo: sloRaw === undefined ? { ...DEFAULT_SLO } : parseSlo(sloRaw),
    workers: number('workers', 0, 0, LIMITS.workers, true),
    outDir: String(get('out') ?? `sweep-results/${new Date().toISOString().replaceAll(':', '-').slice(0, 19)}`),
    fake: {
      // Real fleets run ~256-512 sequences per engine; a few huge engines would deliver unrealistically large
      // synchronized bursts (every stream of an engine gets its token in the same step). With 256 running
      // sequences per engine and one engine per 500 slots of the peak step, the fleet runs half the peak at once
      // and queues the rest inside the engines (no bytes sent), as an oversubscribed real fleet does.
      // A rollout step is worth measuring when the batch outnumbers the fleet's slots: by default 4 rollouts per
      // running slot at the peak step, on at least 2 engines.
      engines: number(
        'fake-engines',
        Math.min(
          LIMITS.fakeEngines,
          rollouts
            ? Math.max(2, Math.ceil(Math.max(...steps) / (4 * maxNumSeqs)))
            : Math.max(4, Math.ceil(Math.max(...steps) / 500)),
        ),
        1,
        LIMITS.fakeEngines,
        true,
      ),
      processes: number('fake-processes', 2, 0, LIMITS.fakeProcesses, true),
      maxNumSeqs,
      ttftMs: number('fake-ttft-ms', 500, 0, LIMITS.durationMs),
      itlMs: number('fake-itl-ms', 250, 0, LIMITS.durationMs),
      nice:
        // SCHED_IDLE is Linux's; elsewhere the default stays nice 19.
        get('fake-nice') === 'idle' || (get('fake-nice') === undefined && process.platform === 'linux')
          ? 'idle'
          : number('fake-nice', 19, 0, 19, true),
    },
    quick,
    seed: number('seed', 1, 0, 2 ** 31 - 1, true),
    arrival: arrival as SweepOptions['arrival'],
    gammaShape: number('gamma-shape', 0.5, Number.MIN_VALUE, 1000),
    maxConcurrency: number('max-concurrency', 10_000, 1, LIMITS.maxConcurrency, true),
    maxCatchUpMs: duration('max-catch-up-ms', 1000),
  };
  // The embedded fleet is checked by fake-vllm's own rules, with the sweep's flag named.
  try {
    const { nice, ...fake } = options.fake;
    resolveFakeVllmOptions({ ...fake, nice: nice === 'idle' ? 0 : nice, maxModelLen: 1_000_000, control: false });
  } catch (error) {
    if (!(error instanceof FakeVllmConfigError)) throw error;
    const flag = { ttftMs: 'fake-ttft-ms', itlMs: 'fake-itl-ms', maxNumSeqs: 'fake-max-num-seqs' }[
      error.field as string
    ];
    throw new SweepConfigError(`Invalid \`--${flag ?? 'fake-*'}\` for the embedded fake-vllm: ${error.message}`);
  }
  if (options.resume && (options.endpoint !== 'generate' || options.mode !== 'sdk'))
    throw new SweepConfigError(
      '`--resume` works with `--endpoint generate` and `--mode sdk` (token-in/token-out resume)',
    );
  if (options.targets.length > 0 && options.faults)
    throw new SweepConfigError('`--faults` works with the embedded fake-vllm only (drop --target)');
  if (rollouts) checkRolloutOptions(options, fleetRaw !== undefined, get('restart-down-ms') !== undefined);
  else if (get('restart-down-ms') !== undefined)
    throw new SweepConfigError('`--restart-down-ms` works with `--scenario rollout-step --fleet restart` only');
  return { options, help: values.help === true };
}

/** What `--scenario rollout-step` cannot be combined with; each a one-line error naming the flags. */
function checkRolloutOptions(options: SweepOptions, fleetGiven: boolean, restartDownGiven: boolean): void {
  const fail = (message: string) => new SweepConfigError(`\`--scenario rollout-step\`: ${message}`);
  if (options.arrival !== 'closed')
    throw fail(`a step fires its rollouts at once; \`--arrival ${options.arrival}\` is for the ramp (drop it)`);
  if (options.mode !== 'sdk') throw fail('the policies are SDK options; `--mode direct` has none (drop it)');
  if (options.targets.length > 0 && fleetGiven)
    throw fail('`--fleet` shapes the embedded engines; the fleet of `--target` engines is what it is (drop --fleet)');
  if (options.fleet !== 'uniform' && options.targets.length === 0 && options.fake.engines < 2)
    throw fail(`\`--fleet ${options.fleet}\` changes one engine of several; pass \`--fake-engines\` 2 or more`);
  if (restartDownGiven && options.fleet !== 'restart')
    throw fail('`--restart-down-ms` works with `--fleet restart` only');
  const peak = Math.max(...options.steps);
  if (peak * options.sessionTurns > LIMITS.rolloutRequests)
    throw fail(
      `a step of ${peak} rollouts x ${options.sessionTurns} turns is ${peak * options.sessionTurns} requests; at most ${LIMITS.rolloutRequests} (lower --steps or --session-turns)`,
    );
}

/** The `--help` text. */
export function usage(): string {
  const lines = Object.entries(FLAG_HELP).map(([flag, help]) => `  --${flag.padEnd(22)}${help}`);
  return `Usage: load-sweep [flags]\n\nRamps concurrency through the steps against embedded fake-vllm engines (default) or --target engines,\nand writes summary.json, summary.csv, requests-*.jsonl and report.html to --out.\n\n${lines.join('\n')}\n`;
}
