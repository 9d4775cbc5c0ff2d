#!/usr/bin/env node
// Benchmark (not a test): this SDK vs raw undici (stock Agent, connections 50,000) vs the openai npm package,
// against fake-vllm, each side in its own process, alternating in rounds within one run. Prints medians and ratios
// and writes bench/results/client-bench.json.
//
//   pnpm bench                         # from the repository root (builds first)
//   node bench/client-bench.mjs --rounds 3 --duration-ms 5000
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ControlClient } from 'fake-vllm';
import { benchArgs, integerFlag } from './cli.mjs';

const { values, script } = benchArgs(import.meta.url, {
  rounds: { type: 'string', default: '3' },
  'duration-ms': { type: 'string', default: '5000' },
  burst: { type: 'string', default: '10000' },
  'burst-only': { type: 'boolean', default: false },
  // Where the JSON result goes (a short check run writes elsewhere, not over the committed results).
  out: { type: 'string', default: fileURLToPath(new URL('./results/client-bench.json', import.meta.url)) },
});
const rounds = integerFlag(script, values, 'rounds', 1, 20);
const durationMs = integerFlag(script, values, 'duration-ms', 100, 600_000);
const burstSize = integerFlag(script, values, 'burst', 1, 15_000);
const fakeCli = createRequire(import.meta.url)
  .resolve('fake-vllm/package.json')
  .replace(/package\.json$/, 'dist/cli.js');
const runner = fileURLToPath(new URL('./runner.mjs', import.meta.url));

async function startFake(args) {
  const child = spawn(
    process.execPath,
    [fakeCli, '--max-num-seqs', '100000', '--jitter', '0', '--keep-alive-timeout-ms', '60000', ...args],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const [line] = await once(createInterface({ input: child.stdout }), 'line');
  const ready = JSON.parse(line);
  return { child, url: ready.engines[0].url, control: ready.control };
}

function run(config) {
  return JSON.parse(
    execFileSync(process.execPath, [runner, JSON.stringify(config)], { encoding: 'utf8', maxBuffer: 1 << 20 })
      .trim()
      .split('\n')
      .at(-1),
  );
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const kinds = ['sdk', 'undici', 'openai'];
const scenarios = [
  { name: 'non-streaming C=100', concurrency: 100, stream: false },
  { name: 'non-streaming C=1000', concurrency: 1000, stream: false },
  { name: 'streaming (8 tokens) C=1000', concurrency: 1000, stream: true },
];

const fast = await startFake(['--ttft-ms', '0', '--itl-ms', '0.1', '--prefill-ms-per-token', '0']);
const resultsPath = values.out;
const results = { scenarios: [], burst: undefined };
if (values['burst-only']) results.scenarios = JSON.parse(readFileSync(resultsPath, 'utf8')).scenarios;
for (const scenario of values['burst-only'] ? [] : scenarios) {
  const samples = Object.fromEntries(kinds.map((kind) => [kind, []]));
  for (let round = 0; round < rounds; round++) {
    for (const kind of round % 2 === 0 ? kinds : [...kinds].reverse()) {
      const result = run({
        kind,
        url: fast.url,
        concurrency: scenario.concurrency,
        durationMs,
        stream: scenario.stream,
      });
      samples[kind].push({
        rps: (result.completed * 1000) / result.wallMs,
        cpuUsPerRequest: (result.cpuMs * 1000) / result.completed,
        errors: result.errors,
      });
    }
  }
  const summary = Object.fromEntries(
    kinds.map((kind) => [
      kind,
      {
        requestsPerSecond: Math.round(median(samples[kind].map((s) => s.rps))),
        cpuMicrosecondsPerRequest: Math.round(median(samples[kind].map((s) => s.cpuUsPerRequest))),
        errors: samples[kind].reduce((t, s) => t + s.errors, 0),
      },
    ]),
  );
  const row = {
    scenario: scenario.name,
    ...summary,
    sdkThroughputVsUndici: Number((summary.sdk.requestsPerSecond / summary.undici.requestsPerSecond).toFixed(3)),
    sdkCpuVsUndici: Number(
      (summary.sdk.cpuMicrosecondsPerRequest / summary.undici.cpuMicrosecondsPerRequest).toFixed(3),
    ),
    sdkThroughputVsOpenai: Number((summary.sdk.requestsPerSecond / summary.openai.requestsPerSecond).toFixed(3)),
  };
  results.scenarios.push(row);
  console.log(JSON.stringify(row));
}
fast.child.kill('SIGTERM');

// Burst: 10,000 requests at once against an engine that holds each for 4 s. Client time to put the wave on the
// wire (issue loop wall + CPU), and when the server had seen every request (its own counter).
const slow = await startFake(['--ttft-ms', '4000', '--itl-ms', '1', '--processes', '1']);
const control = await ControlClient.connect(slow.control);
const burst = Object.fromEntries(kinds.slice(0, 2).map((kind) => [kind, []]));
for (let round = 0; round < rounds; round++) {
  for (const kind of round % 2 === 0 ? ['sdk', 'undici'] : ['undici', 'sdk']) {
    const before = (await control.stats()).total.requests;
    let started;
    let allSeenMs;
    const poll = setInterval(async () => {
      if (started === undefined) return;
      const seen = (await control.stats()).total.requests - before;
      if (allSeenMs === undefined && seen >= burstSize) allSeenMs = performance.now() - started;
    }, 20);
    const result = await new Promise((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [runner, JSON.stringify({ kind, url: slow.url, concurrency: 1, burst: burstSize, stream: false })],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      child.stdout.on('data', (chunk) => {
        out += chunk;
        if (started === undefined && out.includes('burst-start')) started = performance.now();
      });
      child.on('exit', (code) =>
        code === 0 ? resolve(JSON.parse(out.trim().split('\n').at(-1))) : reject(new Error(`runner exited ${code}`)),
      );
    });
    clearInterval(poll);
    burst[kind].push({
      issueCpuMs: result.issueCpuMs,
      issueMs: result.issueMs,
      allSeenByServerMs: allSeenMs ?? null,
      completed: result.completed,
      errors: result.errors,
    });
    console.log(JSON.stringify({ burst: kind, ...burst[kind].at(-1) }));
  }
}
await control.close();
slow.child.kill('SIGTERM');
const burstSummary = Object.fromEntries(
  Object.entries(burst).map(([kind, samples]) => [
    kind,
    {
      issueCpuMs: Math.round(median(samples.map((s) => s.issueCpuMs))),
      allSeenByServerMs: Math.round(median(samples.map((s) => s.allSeenByServerMs ?? Number.NaN))),
      errors: samples.reduce((t, s) => t + s.errors, 0),
    },
  ]),
);
results.burst = {
  size: burstSize,
  ...burstSummary,
  sdkIssueCpuVsUndici: Number((burstSummary.sdk.issueCpuMs / burstSummary.undici.issueCpuMs).toFixed(3)),
  sdkAllSeenVsUndici: Number((burstSummary.sdk.allSeenByServerMs / burstSummary.undici.allSeenByServerMs).toFixed(3)),
};

const output = {
  benchmark: 'remote-inference-client vs raw undici vs openai, against fake-vllm (each in its own process)',
  command: `node bench/client-bench.mjs --rounds ${rounds} --duration-ms ${durationMs} --burst ${burstSize}`,
  machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version, kernel: os.release() },
  date: new Date().toISOString(),
  ...results,
};
writeFileSync(resultsPath, `${JSON.stringify(output, null, 2)}\n`);
console.log(
  '\n| scenario | SDK req/s | undici req/s | openai req/s | SDK/undici throughput | SDK/undici CPU per request |',
);
console.log('| --- | --- | --- | --- | --- | --- |');
for (const row of results.scenarios)
  console.log(
    `| ${row.scenario} | ${row.sdk.requestsPerSecond} | ${row.undici.requestsPerSecond} | ${row.openai.requestsPerSecond} | ${row.sdkThroughputVsUndici} | ${row.sdkCpuVsUndici} |`,
  );
console.log(
  `burst of ${burstSize}: client CPU to issue SDK ${burstSummary.sdk.issueCpuMs} ms vs undici ${burstSummary.undici.issueCpuMs} ms (ratio ${results.burst.sdkIssueCpuVsUndici}); all seen by server SDK ${burstSummary.sdk.allSeenByServerMs} ms vs undici ${burstSummary.undici.allSeenByServerMs} ms`,
);
