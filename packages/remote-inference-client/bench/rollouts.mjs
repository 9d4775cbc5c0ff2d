#!/usr/bin/env node
// Benchmark (not a test): how soon a synchronous RL step's LAST rollout is back. A step is N token-in/token-out
// rollouts sent at once, with long-tailed output lengths (fake-vllm's seeded lognormal: every policy and every
// fleet gets the same lengths for the same prompts), to a fleet of fake engines, each in its own child process,
// whose running slots in total are fewer than N. Policies side by side in one run, in alternating order:
//
//   skyrl-baseline     round robin, a fixed 512 per engine (SkyRL's router and semaphore): all bound at t = 0
//   previous-default   this SDK's previous default: least outstanding, a fixed 512 per engine
//   late-binding       this SDK's default (no limits given): least outstanding, caps learned from /metrics
//
// Fleets: uniform; one engine at half speed (ITL and TTFT x2); one engine restarting mid-step (every connection
// reset, refused for --down-ms, back with an empty prefix cache). Then multi-turn agentic sessions (prompts grow by
// the previous turn's output and a user message; between turns the environment works for 0.5-1.5x --tool-ms, as a
// tool call or code run does) with late binding, without and with session affinity, and the baseline. Prints the step makespan, rollout latency p50/p99 (from the step's start), decode-slot utilisation,
// failed rollouts, and the lower bound max(total work / total capacity, longest rollout); for single-turn fleets also
// what an ideal dispatcher reaches with the step's lengths (simulated, no overheads): first-free-slot in submission
// order (the best a client that does not know output lengths can do) and longest-first (knowing every length); for
// sessions the prefix-cache hit rate (the engines' own counters) and TTFT p50. Writes bench/results/rollouts.json.
//
//   pnpm bench:rollouts                     # from the repository root: builds, then the full run (~3 minutes)
//   node bench/rollouts.mjs --quick         # a scaled-down check (< 1 minute)
//   node bench/rollouts.mjs --rounds 2 --rollouts 1280 --scenarios uniform,slow
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { createRandom, startFakeVllm } from 'fake-vllm';
import { RemoteInferenceClient, SessionAffinityPolicy } from '../dist/index.js';
import { benchArgs, usageError } from './cli.mjs';

const FULL = {
  rounds: 2,
  engines: 4,
  slots: 40,
  rollouts: 1280,
  'itl-ms': 6,
  'ttft-ms': 40,
  'prefill-ms-per-token': 0.4,
  'median-tokens': 80,
  sigma: 0.8,
  'max-tokens': 480,
  'prompt-tokens': 64,
  sessions: 240,
  turns: 4,
  'session-prompt-tokens': 256,
  'user-tokens': 32,
  'tool-ms': 300,
  'down-ms': 1500,
  'restart-at': 0.25,
};
const QUICK = {
  ...FULL,
  rounds: 1,
  slots: 16,
  rollouts: 384,
  'itl-ms': 5,
  'median-tokens': 40,
  'max-tokens': 240,
  sessions: 96,
  turns: 3,
  'down-ms': 600,
};
const SCENARIOS = ['uniform', 'slow', 'restart', 'multi-turn'];

const { values, script } = benchArgs(import.meta.url, {
  quick: { type: 'boolean', default: false },
  scenarios: { type: 'string', default: SCENARIOS.join(',') },
  out: { type: 'string' },
  ...Object.fromEntries(Object.keys(FULL).map((name) => [name, { type: 'string' }])),
});
const preset = values.quick ? QUICK : FULL;
const settings = {};
for (const [name, fallback] of Object.entries(preset)) {
  const given = values[name];
  const value = given === undefined ? fallback : Number(given);
  const whole = !['itl-ms', 'ttft-ms', 'prefill-ms-per-token', 'sigma', 'restart-at', 'tool-ms'].includes(name);
  if (!Number.isFinite(value) || value < 0 || (whole && !Number.isInteger(value)) || value > 1e6) {
    usageError(script, `--${name} must be a ${whole ? 'whole ' : ''}number >= 0, got ${given}`);
  }
  settings[name] = value;
}
const scenarios = values.scenarios.split(',').filter(Boolean);
for (const scenario of scenarios) {
  if (!SCENARIOS.includes(scenario)) {
    usageError(script, `--scenarios takes ${SCENARIOS.join(', ')}; got ${scenario}`);
  }
}
if (settings.engines < 2 || settings.rounds < 1 || settings.rollouts < 1 || settings['restart-at'] >= 1) {
  usageError(script, 'needs --engines >= 2, --rounds >= 1, --rollouts >= 1 and --restart-at < 1');
}
const out = values.out ?? fileURLToPath(new URL('./results/rollouts.json', import.meta.url));

const ENGINES = settings.engines;
const SLOTS = settings.slots;
const ITL = settings['itl-ms'];
const TTFT = settings['ttft-ms'];
const PREFILL = settings['prefill-ms-per-token'];
const SLOW_ENGINE = ENGINES - 1;

// Seeded prompts: the same rollouts (and so the same drawn lengths) for every policy and fleet.
const tokens = (next, count) => Array.from({ length: count }, () => 1 + Math.floor(next() * 31_000));
const prompts = (() => {
  const next = createRandom(17);
  return Array.from({ length: settings.rollouts }, () => tokens(next, settings['prompt-tokens']));
})();

const fake = await startFakeVllm({
  engines: ENGINES,
  processes: ENGINES,
  maxNumSeqs: SLOTS,
  ttftMs: TTFT,
  itlMs: ITL,
  prefillMsPerToken: PREFILL,
  jitter: 0.05,
  seed: 3,
  outputLengths: { distribution: 'lognormal', medianTokens: settings['median-tokens'], sigma: settings.sigma, seed: 5 },
  control: false,
});
const engines = fake.engines.map((engine) => engine.url);

const POLICIES = {
  'skyrl-baseline': () => ({ routing: 'round-robin', limits: { perEngine: { maxConcurrency: 512 } } }),
  'previous-default': () => ({ routing: 'least-outstanding', limits: { perEngine: { maxConcurrency: 512 } } }),
  'late-binding': () => ({}), // the defaults: least outstanding, `limits.perEngine.adaptive`
};
// How long a turn waits for its session's engine before it spills: about what a spill costs, the TTFT of a
// session's context prefilled on an engine that has none of it (scaled with the bench's timings, as the rest is).
const AFFINITY_WAIT_MS = Math.round(
  TTFT +
    PREFILL *
      (settings['session-prompt-tokens'] +
        (settings.turns / 2) * (settings['median-tokens'] + settings['user-tokens'])),
);
const SESSION_POLICIES = {
  'skyrl-baseline': POLICIES['skyrl-baseline'],
  'late-binding, no affinity': POLICIES['late-binding'],
  'late-binding + affinity': () => ({
    routing: new SessionAffinityPolicy({ maxWaitMs: AFFINITY_WAIT_MS }),
  }),
};
const failures = (errors, error) => {
  const code = error?.code ?? 'untyped';
  errors[code] = (errors[code] ?? 0) + 1;
};

function newClient(options, onRequestEnd) {
  return new RemoteInferenceClient({
    engines,
    transport: { shared: false },
    // Every rollout counts in a synchronous step: no retry budget (SkyRL retries without one). With fixed caps a
    // restart drops a quarter of the step's requests at once, beyond the default 20% budget. The same for every
    // policy.
    retry: { maxAttempts: 8, budgetRatio: 1, minRetriesPerSecond: 1_000_000, baseBackoffMs: 50, maxBackoffMs: 1000 },
    ...(onRequestEnd ? { onRequestEnd } : {}),
    ...options,
  });
}

const percentile = (values, p) => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};
const median = (values) => percentile(values, 50);

/** Sets each engine's speed for a fleet, empties prefix caches, and returns the engines' counters before the step. */
async function prepare(fleet) {
  await fake.control.setLatency({ itlMs: ITL, ttftMs: TTFT });
  if (fleet === 'slow') await fake.control.setLatency({ itlMs: 2 * ITL, ttftMs: 2 * TTFT }, SLOW_ENGINE);
  const client = newClient({});
  await client.control.resetPrefixCache();
  await client.close();
  return (await fake.control.stats()).engines;
}

/** Busy decode-slot time over what the fleet offered during the step: sum(tokens x ITL) / (slots x makespan). */
function utilisation(before, after, fleet, makespanMs) {
  let busyMs = 0;
  for (let index = 0; index < ENGINES; index++) {
    const itl = fleet === 'slow' && index === SLOW_ENGINE ? 2 * ITL : ITL;
    busyMs += (after[index].generationTokens - before[index].generationTokens) * itl;
  }
  return busyMs / (ENGINES * SLOTS * makespanMs);
}

const speedSum = (fleet) => (fleet === 'slow' ? ENGINES - 0.5 : ENGINES);

/** One step of single-turn rollouts. */
async function rolloutStep(policy, fleet, restartAtMs) {
  const before = await prepare(fleet);
  const client = newClient(POLICIES[policy]());
  const lengths = new Array(prompts.length).fill(0);
  const ends = [];
  let failed = 0;
  const failedBy = {};
  const start = performance.now();
  let restartTimer;
  if (fleet === 'restart') {
    restartTimer = setTimeout(() => {
      fake.control.restartEngine({ downMs: settings['down-ms'] }, SLOW_ENGINE).catch((error) => {
        process.stderr.write(`rollouts: restartEngine failed: ${error.message}\n`);
      });
    }, restartAtMs);
  }
  await Promise.all(
    prompts.map(async (prompt, index) => {
      try {
        const result = await client.generate({
          token_ids: prompt,
          sampling_params: { max_tokens: settings['max-tokens'], seed: index },
        });
        lengths[index] = result.choices[0].token_ids.length;
        ends.push(performance.now() - start);
      } catch (error) {
        failed++;
        failures(failedBy, error);
      }
    }),
  );
  const makespanMs = performance.now() - start;
  clearTimeout(restartTimer);
  const capStats = client.stats().engines.map((engine) => engine.maxConcurrency);
  await client.close();
  const after = (await fake.control.stats()).engines;
  return {
    policy,
    fleet,
    makespanMs,
    p50Ms: median(ends),
    p99Ms: percentile(ends, 99),
    utilisation: utilisation(before, after, fleet, makespanMs),
    failed,
    failedBy,
    lengths,
    servedPerEngine: after.map((engine, index) => engine.completed - before[index].completed),
    finalCaps: capStats,
  };
}

/** One step of multi-turn sessions: each session's turns one after another, every session at once. */
async function sessionStep(policy) {
  const before = await prepare('uniform');
  const ttfts = [];
  const engineTtfts = [];
  const client = newClient(SESSION_POLICIES[policy](), (stats) => {
    if (!stats.ok || stats.serverTtftMs === undefined) return;
    engineTtfts.push(stats.serverTtftMs);
    ttfts.push(stats.queueMs + stats.serverTtftMs); // waiting in the client counts: late binding moves it there
  });
  const sessionEnds = [];
  const sessionWorkMs = [];
  const sessionPathMs = [];
  let failed = 0;
  const failedBy = {};
  const start = performance.now();
  await Promise.all(
    Array.from({ length: settings.sessions }, async (_, session) => {
      const next = createRandom(1000 + session);
      const toolTime = createRandom(5000 + session);
      let prompt = tokens(next, settings['session-prompt-tokens']);
      let workMs = 0;
      let toolMs = 0;
      try {
        for (let turn = 0; turn < settings.turns; turn++) {
          if (turn > 0) {
            // The environment's step between turns (a tool call, code run): 0.5-1.5x --tool-ms, seeded per session.
            const ms = settings['tool-ms'] * (0.5 + toolTime());
            toolMs += ms;
            await new Promise((resolve) => setTimeout(resolve, ms));
          }
          const result = await client.generate(
            // The request's seed makes tokens and lengths the same whichever engine serves the turn, so every
            // policy replays the same sessions (without it each engine's own seed would pick the tokens).
            { token_ids: prompt, sampling_params: { max_tokens: settings['max-tokens'], seed: session * 100 + turn } },
            { sessionId: `session-${session}` },
          );
          const output = result.choices[0].token_ids;
          workMs += TTFT + output.length * ITL;
          prompt = [...prompt, ...output, ...tokens(next, settings['user-tokens'])];
        }
        sessionEnds.push(performance.now() - start);
        sessionWorkMs.push(workMs);
        sessionPathMs.push(workMs + toolMs);
      } catch (error) {
        failed++;
        failures(failedBy, error);
      }
    }),
  );
  const makespanMs = performance.now() - start;
  await client.close();
  const after = (await fake.control.stats()).engines;
  let queries = 0;
  let hits = 0;
  for (let index = 0; index < ENGINES; index++) {
    queries += after[index].prefixCacheQueryTokens - before[index].prefixCacheQueryTokens;
    hits += after[index].prefixCacheHitTokens - before[index].prefixCacheHitTokens;
  }
  return {
    policy,
    makespanMs,
    p50Ms: median(sessionEnds),
    p99Ms: percentile(sessionEnds, 99),
    utilisation: utilisation(before, after, 'uniform', makespanMs),
    failed,
    failedBy,
    hitRate: queries === 0 ? 0 : hits / queries,
    ttftP50Ms: median(ttfts),
    engineTtftP50Ms: median(engineTtfts),
    // With every prefix cached, a session needs at least its turns' TTFT and decode and its tool time one after
    // another; the tool time holds no engine slot.
    lowerBoundMs: Math.max(
      sessionWorkMs.reduce((sum, value) => sum + value, 0) / (ENGINES * SLOTS),
      Math.max(...sessionPathMs),
    ),
  };
}

/**
 * max(total work / total capacity, longest rollout), from the lengths the engines drew. With a restart, the
 * capacity the restarted engine's slots could not offer while it was down (--down-ms) is missing too; the work its
 * cut rollouts lose is not counted (it depends on the policy), so this stays a lower bound.
 */
function lowerBoundMs(lengths, fleet) {
  const prefill = PREFILL * settings['prompt-tokens'];
  const work = lengths.map((length) => TTFT + prefill + length * ITL);
  const total = work.reduce((sum, value) => sum + value, 0);
  const outage = fleet === 'restart' ? SLOTS * settings['down-ms'] : 0;
  return Math.max((total + outage) / (SLOTS * speedSum(fleet)), Math.max(...work));
}

/**
 * The makespan of an ideal dispatcher with these lengths, simulated: no overhead at all, each rollout goes to the
 * first decode slot of the fleet that frees, in `order`. 'fifo' is submission order: without knowing output
 * lengths no order does better (the rollouts are alike until they run), so this is what late binding could reach
 * with zero cost when the engines run at one speed (with a slower engine, a policy that knows the speeds could
 * keep the last rollouts off it). 'longest-first' knows every length in advance, which no client does: the gap
 * between the two is the long tail's cost. A half-speed engine takes twice the TTFT and ITL; on a restart, the rollouts running on the
 * restarted engine are lost and go back to the head of the queue, and its slots are gone for --down-ms.
 * Timing noise decides which rollout lands on which engine (a long one on the half-speed engine costs seconds), so
 * each rollout's duration is perturbed by up to +-3% and the simulation is run `draws` times (seeded): returns the
 * p10, median and p90 makespan.
 */
function idealMakespanMs(lengths, fleet, restartAtMs, order, draws = 200) {
  const prefill = PREFILL * settings['prompt-tokens'];
  const slowed = (engine) => fleet === 'slow' && engine === SLOW_ENGINE;
  const submitted = lengths.map((_, index) => index);
  if (order === 'longest-first') submitted.sort((a, b) => lengths[b] - lengths[a]);
  const noise = createRandom(23);
  const makespans = [];
  for (let draw = 0; draw < draws; draw++) {
    const queue = [...submitted];
    const slots = [];
    for (let engine = 0; engine < ENGINES; engine++) {
      for (let slot = 0; slot < SLOTS; slot++) slots.push({ engine, freeAt: 0, job: -1 });
    }
    let restartPending = fleet === 'restart';
    for (;;) {
      let next = slots[0];
      for (const slot of slots) if (slot.freeAt < next.freeAt) next = slot;
      if (restartPending && (next.freeAt >= restartAtMs || queue.length === 0)) {
        restartPending = false;
        const cut = [];
        for (const slot of slots) {
          if (slot.engine !== SLOW_ENGINE) continue;
          if (slot.job >= 0 && slot.freeAt > restartAtMs) cut.push(slot.job);
          slot.freeAt = restartAtMs + settings['down-ms'];
          slot.job = -1;
        }
        queue.unshift(...cut);
        continue;
      }
      if (queue.length === 0) break;
      const job = queue.shift();
      const scale = slowed(next.engine) ? 2 : 1;
      next.freeAt += (scale * (TTFT + lengths[job] * ITL) + prefill) * (0.97 + 0.06 * noise());
      next.job = job;
    }
    let makespan = 0;
    for (const slot of slots) if (slot.job >= 0) makespan = Math.max(makespan, slot.freeAt);
    makespans.push(makespan);
  }
  return { p10Ms: percentile(makespans, 10), medianMs: median(makespans), p90Ms: percentile(makespans, 90) };
}

const fmt = (ms) => (Number.isFinite(ms) ? (ms / 1000).toFixed(2) : '—');
const pct = (value) => `${(100 * value).toFixed(0)}%`;
function table(header, rows) {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => String(row[column]).length)),
  );
  const line = (cells) => `| ${cells.map((cell, column) => String(cell).padEnd(widths[column])).join(' | ')} |`;
  return [line(header), line(widths.map((width) => '-'.repeat(width))), ...rows.map(line)].join('\n');
}

// When the uniform fleet did not run first, the restart time comes from the lengths' mean (lognormal, uncapped).
const estimatedBoundMs =
  (settings.rollouts *
    (TTFT +
      PREFILL * settings['prompt-tokens'] +
      settings['median-tokens'] * Math.exp(settings.sigma ** 2 / 2) * ITL)) /
  (ENGINES * SLOTS);
// A short untimed step first: the engines' processes and this one are warm before anything is measured.
{
  const client = newClient(POLICIES['skyrl-baseline']());
  await Promise.all(
    prompts
      .slice(0, ENGINES * SLOTS)
      .map((prompt) => client.generate({ token_ids: prompt, sampling_params: { max_tokens: 8 } }).catch(() => {})),
  );
  await client.close();
}
const startedAt = new Date().toISOString();
const results = {};
const wallStart = performance.now();
let uniformBoundMs;
try {
  for (const fleet of scenarios) {
    const names = fleet === 'multi-turn' ? Object.keys(SESSION_POLICIES) : Object.keys(POLICIES);
    const runs = [];
    let ideal;
    for (let round = 0; round < settings.rounds; round++) {
      // Alternate the order between rounds, so no policy always runs first (warm caches, a quieter machine).
      const order = names.map((_, index) => names[(index + round) % names.length]);
      for (const policy of order) {
        const restartAtMs = settings['restart-at'] * (uniformBoundMs ?? estimatedBoundMs);
        const run = fleet === 'multi-turn' ? await sessionStep(policy) : await rolloutStep(policy, fleet, restartAtMs);
        if (fleet !== 'multi-turn') {
          run.lowerBoundMs = lowerBoundMs(run.lengths, fleet);
          if (fleet === 'uniform') uniformBoundMs ??= run.lowerBoundMs;
          // The lengths are the same in every step (seeded); a failed rollout's would be missing.
          if (ideal === undefined && run.failed === 0) {
            ideal = {
              restartAtMs: fleet === 'restart' ? restartAtMs : undefined,
              fifo: idealMakespanMs(run.lengths, fleet, restartAtMs, 'fifo'),
              longestFirst: idealMakespanMs(run.lengths, fleet, restartAtMs, 'longest-first'),
            };
          }
          delete run.lengths;
        }
        runs.push({ round, ...run });
        process.stderr.write(
          `  ${fleet} round ${round + 1}: ${policy} makespan ${fmt(run.makespanMs)} s${run.failed ? `, ${run.failed} failed` : ''}\n`,
        );
      }
    }
    const summary = names.map((policy) => {
      const mine = runs.filter((run) => run.policy === policy);
      const pick = (field) => median(mine.map((run) => run[field]));
      return {
        policy,
        makespanMs: pick('makespanMs'),
        p50Ms: pick('p50Ms'),
        p99Ms: pick('p99Ms'),
        utilisation: pick('utilisation'),
        failed: mine.reduce((sum, run) => sum + run.failed, 0),
        lowerBoundMs: pick('lowerBoundMs'),
        ...(fleet === 'multi-turn'
          ? { hitRate: pick('hitRate'), ttftP50Ms: pick('ttftP50Ms'), engineTtftP50Ms: pick('engineTtftP50Ms') }
          : {}),
      };
    });
    const baseline = summary.find((row) => row.policy === 'skyrl-baseline').makespanMs;
    for (const row of summary) row.speedupVsBaseline = baseline / row.makespanMs;
    results[fleet] = { runs, summary, ...(ideal ? { ideal } : {}) };
    const title =
      fleet === 'multi-turn'
        ? `multi-turn: ${settings.sessions} sessions x ${settings.turns} turns, ~${settings['tool-ms']} ms of tool time between turns (affinity waits up to ${AFFINITY_WAIT_MS} ms)`
        : `${fleet} fleet: ${settings.rollouts} rollouts on ${ENGINES} engines x ${SLOTS} slots`;
    const header = ['policy', 'makespan s', 'vs baseline', 'p50 s', 'p99 s', 'utilisation', 'failed', 'lower bound s'];
    if (fleet === 'multi-turn') header.push('prefix hit rate', 'TTFT p50 ms', 'engine TTFT p50 ms');
    const rows = summary.map((row) => {
      const cells = [
        row.policy,
        fmt(row.makespanMs),
        `${row.speedupVsBaseline.toFixed(2)}x`,
        fmt(row.p50Ms),
        fmt(row.p99Ms),
        pct(row.utilisation),
        row.failed,
        fmt(row.lowerBoundMs),
      ];
      if (fleet === 'multi-turn') {
        cells.push(pct(row.hitRate), row.ttftP50Ms.toFixed(0), row.engineTtftP50Ms.toFixed(0));
      }
      return cells;
    });
    const failedRuns = runs.filter((run) => run.failed > 0);
    const failedNote = failedRuns
      .map((run) => `  round ${run.round + 1} ${run.policy}: ${JSON.stringify(run.failedBy)}`)
      .join('\n');
    const idealNote = ideal
      ? `ideal dispatchers, simulated with these lengths (no overheads; p10-p90 of 200 draws with +-3% timing noise): ` +
        `first free slot in submission order ${fmt(ideal.fifo.medianMs)} s (${fmt(ideal.fifo.p10Ms)}-${fmt(ideal.fifo.p90Ms)}), ` +
        `longest first (knows every length) ${fmt(ideal.longestFirst.medianMs)} s; the baseline over the first: ` +
        `${(baseline / ideal.fifo.medianMs).toFixed(2)}x${
          fleet === 'slow'
            ? ''
            : ' (engines of one speed: the most any policy that does not know output lengths can win)'
        }\n`
      : '';
    process.stdout.write(
      `\n${title} (medians of ${settings.rounds} round(s))\n${table(header, rows)}\n${idealNote}${
        failedNote ? `failed rollouts (their makespan counts only the others):\n${failedNote}\n` : ''
      }`,
    );
  }
} finally {
  await fake.close();
}

const report = {
  command: `node bench/rollouts.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  startedAt,
  wallSeconds: Math.round((performance.now() - wallStart) / 1000),
  machine: {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    loadAverage: os.loadavg(),
  },
  settings,
  policies: {
    'skyrl-baseline': 'routing round-robin, limits.perEngine.maxConcurrency 512',
    'previous-default': 'routing least-outstanding, limits.perEngine.maxConcurrency 512',
    'late-binding': 'the defaults: routing least-outstanding, limits.perEngine.adaptive (learned caps)',
    'late-binding + affinity': `new SessionAffinityPolicy({ maxWaitMs: ${AFFINITY_WAIT_MS} }), learned caps (the default)`,
  },
  results,
};
writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
process.stdout.write(`\nwrote ${out} (${report.wallSeconds} s)\n`);
