import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromiumPath, skipReason } from '@rig/test-support';
import { startFakeVllm } from 'fake-vllm';
import { chromium } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { parseSweepArgs, SweepConfigError } from '../src/options.js';
import type { StepRow, Summary } from '../src/report.js';
import { RequestSource, rolloutSource } from '../src/request-source.js';
import { policyOrder, rolloutShares } from '../src/rollout-step.js';
import { runSweep } from '../src/sweep.js';

// `--scenario rollout-step` end to end against embedded fake-vllm engines: 2 engines x 8 slots, 64 rollouts fired
// at once. Everything asserted is a count (the engines' own tallies, the client's outcomes, the SDK's caps), never
// a duration.

function rolloutRun(name: string, flags: string[]) {
  const out = mkdtempSync(join(tmpdir(), `${name}-`));
  const defaults = [
    '--scenario',
    'rollout-step',
    '--steps',
    '64',
    '--fake-engines',
    '2',
    '--fake-max-num-seqs',
    '8',
    '--fake-ttft-ms',
    '10',
    '--fake-itl-ms',
    '5',
    '--output-tokens',
    'lognormal:8:0.8:32',
    '--workers',
    '1',
  ];
  return { out, options: parseSweepArgs([...defaults, ...flags, '--out', out]).options };
}

const answeredIn = (row: StepRow) =>
  Object.values(row.rollout!.answeredByEngine).reduce((sum, count) => sum + count, 0);

/** Every request of the row is accounted for: sent = ok + failed, the engines' tallies balance with the client's. */
function expectBooksBalance(row: StepRow, requests: number): void {
  expect(row.sent).toBe(requests);
  expect(row.completed + row.failed).toBe(requests);
  expect(row.accounting).toMatchObject({ source: 'fake-vllm tallies', offBy: 0, unsettled: 0, outcomes: requests });
  expect(row.accounting!.engineAnswered).toBe(row.accounting!.answered);
  expect(row.verified).toBe(row.completed);
}

describe('the rollout batch', () => {
  it('draws the same lengths for every run (policy) and worker split, with each run its own prompt prefix', () => {
    const { options } = parseSweepArgs(['--scenario', 'rollout-step', '--output-tokens', 'lognormal:16:1:200']);
    const draw = (index: number, run: number) => {
      const { source, firstToken } = rolloutSource(options, 0, index, run);
      return source.next(undefined, undefined, firstToken);
    };
    for (let index = 0; index < 50; index++) {
      const [first, second] = [draw(index, 0), draw(index, 1)];
      expect(second.maxTokens).toBe(first.maxTokens);
      expect(second.promptTokenIds.slice(1)).toEqual(first.promptTokenIds.slice(1));
      expect(second.promptTokenIds[0]).not.toBe(first.promptTokenIds[0]);
    }
    expect(rolloutShares(10, 3)).toEqual([
      { first: 0, count: 4 },
      { first: 4, count: 3 },
      { first: 7, count: 3 },
    ]);
    expect(policyOrder(['baseline', 'late-binding'], 1)).toEqual(['late-binding', 'baseline']);
  });

  it('lognormal and pareto lengths are long-tailed and stay within 1..MAX', () => {
    const { options } = parseSweepArgs(['--output-tokens', 'lognormal:20:1:400']);
    const source = new RequestSource(options, 0);
    const lengths = Array.from({ length: 4000 }, () => source.length(options.outputTokens)).sort((a, b) => a - b);
    expect(lengths[0]).toBeGreaterThanOrEqual(1);
    expect(lengths.at(-1)).toBeLessThanOrEqual(400);
    // Median 20; p99 / p50 = exp(2.326 sigma) = 10.2 at sigma 1 (seeded: the same draws every run).
    expect(lengths[2000]).toBeGreaterThanOrEqual(17);
    expect(lengths[2000]).toBeLessThanOrEqual(23);
    expect(lengths[3960]! / lengths[2000]!).toBeGreaterThan(6);
    const pareto = parseSweepArgs(['--output-tokens', 'pareto:10:1.5:500']).options.outputTokens;
    const paretoLengths = Array.from({ length: 1000 }, () => source.length(pareto));
    expect(Math.min(...paretoLengths)).toBeGreaterThanOrEqual(10);
    expect(Math.max(...paretoLengths)).toBeLessThanOrEqual(500);
  });
});

it('runs a step of 64 rollouts per policy: one row each, every rollout verified and accounted for by the engines', async () => {
  const { out, options } = rolloutRun('rollout-step', ['--policy', 'baseline,late-binding']);
  const lines: string[] = [];
  const summary = await runSweep(options, (line) => lines.push(line));
  expect(summary.steps.map((row) => row.policy)).toEqual(['baseline', 'late-binding']);
  for (const row of summary.steps) {
    expect(row).toMatchObject({ scenario: 'rollout-step', concurrency: 64, fleet: 'uniform' });
    // Valid unless this shared machine made the client the bottleneck (lag, CPU): never for its books.
    expect(row.invalidReason ?? '').not.toMatch(/books|restart/);
    expectBooksBalance(row, 64);
    expect(row.completed).toBe(64);
    const figures = row.rollout!;
    expect(figures).toMatchObject({ rollouts: 64, turns: 1, failedRollouts: 0, restart: null });
    expect(figures.p50Ms).not.toBeNull();
    expect(figures.p99Ms).not.toBeNull();
    expect(figures.lowerBoundMs).toBeGreaterThan(0);
    // The engines' own count of what each answered: both engines, every rollout.
    expect(figures.answeredByEngineSource).toBe('fake-vllm tallies');
    expect(Object.keys(figures.answeredByEngine)).toHaveLength(2);
    expect(answeredIn(row)).toBe(64);
  }
  const [baseline, lateBinding] = summary.steps as [StepRow, StepRow];
  // The policies are what they say: round robin splits 64 into 32 + 32 behind a fixed cap of 512 per engine;
  // late binding's caps are learned (from 32 before anything is learned, towards the engines' 8 slots).
  expect(Object.values(baseline.rollout!.answeredByEngine)).toEqual([32, 32]);
  expect(Object.values(baseline.rollout!.finalCaps)).toEqual([512, 512]);
  for (const cap of Object.values(lateBinding.rollout!.finalCaps)) expect(cap).toBeLessThanOrEqual(32);
  expect(baseline.rollout!.speedupVsBaseline).toBe(1);
  expect(lateBinding.rollout!.speedupVsBaseline).toBeGreaterThan(0);
  // summary.json, the terminal's table and the report carry the rows.
  const written = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as Summary;
  expect(written.steps.map((row) => row.rollout?.policy)).toEqual(['baseline', 'late-binding']);
  expect(written.knee).toBeNull();
  expect(lines.some((line) => line.includes('| rollouts | policy | fleet | makespan s |'))).toBe(true);
  expect(lines.filter((line) => line.startsWith('rollout step N=64'))).toHaveLength(2);
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  expect(html).toContain('id="rollouts"');
  expect(html).toContain('N=64 late-binding');
  expect(readFileSync(join(out, 'summary.csv'), 'utf8').split('\n')[0]).toContain('makespanMs');
});

it('--fleet restart restarts the last engine mid-step, and every rollout is still accounted for and verified', async () => {
  const { options } = rolloutRun('rollout-restart', [
    '--policy',
    'baseline',
    '--fleet',
    'restart',
    '--restart-down-ms',
    '300',
    '--fake-itl-ms',
    '10',
    '--output-tokens',
    'lognormal:20:0.5:60',
    // Streams cut by the restart are resumed (prompt + tokens so far) on the other engine; the result still
    // verifies token by token.
    '--resume',
  ]);
  const summary = await runSweep(options, () => {});
  const row = summary.steps[0]!;
  const restart = row.rollout!.restart;
  expect(restart).not.toBeNull();
  expect(restart!.engine).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  // Triggered by count: once a quarter of the 64 had been answered by the engines.
  expect(restart!.afterAnswered).toBeGreaterThanOrEqual(16);
  // Round robin with a fixed cap bound 32 rollouts to the restarted engine at t = 0: the restart dropped some.
  expect(restart!.dropped).toBeGreaterThan(0);
  expect(row.resumes + row.retries).toBeGreaterThan(0);
  expectBooksBalance(row, 64);
  expect(row.completed).toBe(64);
  expect(row.rollout!.failedRollouts).toBe(0);
  expect(answeredIn(row)).toBeGreaterThanOrEqual(64);
  expect(row.invalidReason ?? '').not.toMatch(/books|restart/);
});

it('multi-turn rollouts: each turn extends the previous prompt by its answer, and the engines find it in their prefix cache', async () => {
  const { options } = rolloutRun('rollout-sessions', [
    '--steps',
    '24',
    '--session-turns',
    '3',
    '--policy',
    'late-binding',
  ]);
  const summary = await runSweep(options, () => {});
  const row = summary.steps[0]!;
  expect(row.rollout).toMatchObject({ rollouts: 24, turns: 3, failedRollouts: 0 });
  expectBooksBalance(row, 72);
  expect(row.completed).toBe(72);
  // 64-token prompts: a later turn's prompt starts with 4 full blocks the engine cached at the previous turn.
  expect(row.rollout!.prefixCacheHitRate).toBeGreaterThan(0);
});

it('--target engines: the fleet is what it is, the lower bound is unknown, shares counted by the client, books from vLLM counters', async () => {
  // Stands in for a real fleet: started here, outside the sweep, and named by URL only (as an engineer would).
  const fleet = await startFakeVllm({
    engines: 2,
    maxNumSeqs: 8,
    model: 'stand-in',
    ttftMs: 10,
    itlMs: 5,
    control: false,
  });
  try {
    const urls = fleet.engines.map((engine) => engine.url);
    const out = mkdtempSync(join(tmpdir(), 'rollout-target-'));
    const { options } = parseSweepArgs([
      '--scenario',
      'rollout-step',
      '--target',
      urls.join(','),
      '--model',
      'stand-in',
      '--steps',
      '48',
      '--policy',
      'late-binding',
      '--output-tokens',
      'lognormal:8:0.8:32',
      '--workers',
      '1',
      '--out',
      out,
    ]);
    const summary = await runSweep(options, () => {});
    const row = summary.steps[0]!;
    expect(row).toMatchObject({ fleet: 'target', sent: 48, completed: 48, failed: 0, verified: 0 });
    expect(row.rollout).toMatchObject({
      lowerBoundMs: null,
      makespanOverBound: null,
      answeredByEngineSource: 'client',
    });
    expect(row.rollout!.lowerBoundNote).toContain('unknown');
    expect(answeredIn(row)).toBe(48);
    expect(row.accounting).toMatchObject({
      source: 'vllm metrics',
      offBy: 0,
      outcomeDifference: 0,
      engineAnswered: 48,
    });
    // Late binding learns the stand-in's slots from its /metrics gauges, as it would a real vLLM's.
    for (const cap of Object.values(row.rollout!.finalCaps)) expect(cap).toBeLessThanOrEqual(32);
    // What the engines say they served: the untimed warm-up batch (48 too) and the step, each engine at least what
    // the client counted on it.
    const served = (await fleet.control.stats()).engines.map((engine) => engine.completed);
    expect(served.reduce((sum, count) => sum + count, 0)).toBe(96);
    for (const [index, url] of urls.entries())
      expect(served[index]).toBeGreaterThanOrEqual(row.rollout!.answeredByEngine[url] ?? 0);
  } finally {
    await fleet.close();
  }
});

const noChromium = skipReason('load-sweep rollout-step.test.ts (report in chromium)', ['chromium']);

it.skipIf(noChromium !== undefined)(
  "report.html of rollout steps renders in headless chromium: one chart label and one Rollouts row per step and policy, the step table equal to the terminal's",
  async () => {
    const { out, options } = rolloutRun('rollout-report', ['--policy', 'baseline,late-binding']);
    const lines: string[] = [];
    await runSweep(options, (line) => lines.push(line));
    const browser = await chromium.launch({ executablePath: chromiumPath()!, args: ['--no-sandbox', '--disable-gpu'] });
    try {
      const page = await browser.newPage();
      const problems: string[] = [];
      page.on('console', (message) => {
        if (message.type() === 'error') problems.push(message.text());
      });
      page.on('pageerror', (error) => problems.push(error.message));
      await page.route('**/*', (route) =>
        route.request().url().startsWith('file:') ? route.continue() : route.abort(),
      );
      await page.goto(`file://${join(out, 'report.html')}`);
      await page.waitForFunction(() => (globalThis as { reportReady?: boolean }).reportReady === true, undefined, {
        timeout: 10_000,
      });
      const seen = await page.evaluate(() => {
        const document = (
          globalThis as unknown as {
            document: {
              querySelectorAll(selector: string): Iterable<{
                textContent: string | null;
                getAttribute(name: string): string | null;
                querySelectorAll(selector: string): Iterable<{ textContent: string | null }>;
              }>;
            };
          }
        ).document;
        return {
          labels: (globalThis as unknown as { charts: Array<{ data: { labels: unknown[] } }> }).charts.map(
            (chart) => chart.data.labels,
          ),
          rollouts: [...document.querySelectorAll('#rollouts tbody tr')].map((row) => row.getAttribute('data-policy')),
          header: [...document.querySelectorAll('#steps thead th')].map((cell) => cell.textContent),
          cells: [...document.querySelectorAll('#steps tbody tr')].map((row) =>
            [...row.querySelectorAll('td')].map((cell) => cell.textContent),
          ),
        };
      });
      expect(problems).toEqual([]);
      // An invalid step's label is [label, '✗ INVALID'] (the client can be the bottleneck on this shared machine).
      for (const labels of seen.labels)
        expect(labels.map((label) => (Array.isArray(label) ? label[0] : label))).toEqual([
          '64 baseline',
          '64 late-binding',
        ]);
      expect(seen.rollouts).toEqual(['baseline', 'late-binding']);
      // The terminal's markdown table, cell for cell (the last, `valid`, differs in markup only when invalid).
      const table = lines
        .find((line) => line.includes('| rollouts | policy |'))!
        .trim()
        .split('\n');
      const cellsOf = (line: string) =>
        line
          .split('|')
          .slice(1, -1)
          .map((cell) => cell.trim());
      expect(seen.header).toEqual(cellsOf(table[0]!));
      expect(seen.cells.map((row) => row.slice(0, -1))).toEqual(
        table.slice(2).map((line) => cellsOf(line).slice(0, -1)),
      );
    } finally {
      await browser.close();
    }
  },
);

describe('bad rollout-step flags are one line naming the flag', () => {
  it.each([
    [['--policy', 'late-binding'], /`--policy` works with `--scenario rollout-step` only/],
    [['--fleet', 'restart'], /`--fleet` works with `--scenario rollout-step` only/],
    [['--restart-down-ms', '10'], /`--restart-down-ms` works with/],
    [['--scenario', 'sprint'], /`--scenario` to be ramp or rollout-step, got `sprint`/],
    [['--scenario', 'rollout-step', '--policy', 'fastest'], /`--policy` to be one or more of baseline/],
    [['--scenario', 'rollout-step', '--policy', 'baseline,baseline'], /each once/],
    [['--scenario', 'rollout-step', '--fleet', 'wobbly'], /`--fleet` to be uniform, slow-engine, restart/],
    [['--scenario', 'rollout-step', '--fleet', 'restart', '--target', 'http://10.0.0.1:8000'], /is what it is/],
    [['--scenario', 'rollout-step', '--fleet', 'slow-engine', '--fake-engines', '1'], /--fake-engines` 2 or more/],
    [['--scenario', 'rollout-step', '--arrival', 'poisson'], /`--arrival poisson` is for the ramp/],
    [['--scenario', 'rollout-step', '--mode', 'direct'], /`--mode direct` has none/],
    [['--scenario', 'rollout-step', '--steps', '100001'], /rollouts per step in 1\.\.100000/],
    [['--scenario', 'rollout-step', '--steps', '100000', '--session-turns', '20'], /at most 1000000/],
    [['--scenario', 'rollout-step', '--restart-down-ms', '10'], /`--restart-down-ms` works with `--fleet restart`/],
    [['--output-tokens', 'lognormal:0:1'], /`--output-tokens` to be N, uniform/],
    [['--output-tokens', 'lognormal:10:0'], /--output-tokens/],
    [['--output-tokens', 'lognormal:10:11'], /--output-tokens/],
    [['--output-tokens', 'pareto:10:1:5'], /SCALE is above MAX/],
    [['--output-tokens', 'lognormal:10:1:2:3'], /--output-tokens/],
  ])('%j', (argv, message) => {
    expect(() => parseSweepArgs(argv)).toThrow(SweepConfigError);
    expect(() => parseSweepArgs(argv)).toThrow(message);
  });

  it('from the CLI: one line on stderr, exit 2, nothing started', () => {
    const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
    const out = join(mkdtempSync(join(tmpdir(), 'rollout-cli-')), 'never');
    const result = spawnSync(process.execPath, [cli, '--scenario', 'rollout-step', '--mode', 'direct', '--out', out], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(result.status).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toContain('`--scenario rollout-step`');
    expect(existsSync(out)).toBe(false);
  });
});
