#!/usr/bin/env node
// Benchmark (not a test) of the admission limits against fake-vllm (its own process):
//  1. overhead: maxQps far above the load vs no limit, C=1000, alternating rounds;
//  2. accuracy: a binding maxQps of R held over a window, R from 50 to 20,000 (requests the server received);
//  3. a binding maxConcurrency never exceeded, per fake-vllm's own max-concurrent telemetry.
//   node bench/limits-bench.mjs [--window-ms 10000] [--rounds 3]
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ControlClient } from 'fake-vllm';
import { RemoteInferenceClient } from '../dist/index.js';
import { benchArgs, integerFlag } from './cli.mjs';

const { values, script } = benchArgs(import.meta.url, {
  'window-ms': { type: 'string', default: '10000' },
  rounds: { type: 'string', default: '3' },
  // Where the JSON result goes (a short check run writes elsewhere, not over the committed results).
  out: { type: 'string', default: fileURLToPath(new URL('./results/limits-bench.json', import.meta.url)) },
});
const windowMs = integerFlag(script, values, 'window-ms', 1000, 600_000);
const rounds = integerFlag(script, values, 'rounds', 1, 20);
const fakeCli = createRequire(import.meta.url)
  .resolve('fake-vllm/package.json')
  .replace(/package\.json$/, 'dist/cli.js');
const child = spawn(
  process.execPath,
  [
    fakeCli,
    '--engines',
    '2',
    '--max-num-seqs',
    '100000',
    '--ttft-ms',
    '0',
    '--itl-ms',
    '0.1',
    '--prefill-ms-per-token',
    '0',
    '--jitter',
    '0',
    '--keep-alive-timeout-ms',
    '60000',
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const [line] = await once(createInterface({ input: child.stdout }), 'line');
const ready = JSON.parse(line);
const engines = ready.engines.map((engine) => engine.url);
const control = await ControlClient.connect(ready.control);
const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];

async function closedLoop(client, concurrency, durationMs) {
  const deadline = performance.now() + durationMs;
  let completed = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        await client.completions.create({ prompt: [1], max_tokens: 1 });
        completed++;
      }
    }),
  );
  return completed;
}

// 1. Overhead of a non-binding QPS limit: two warmed-up clients side by side, alternating 1 s windows (only one
// loads the server at a time), medians of all windows. Fresh clients per round were measured too noisy here
// (ratios from 0.66 to 1.54 between runs).
// The fixed per-engine cap (512) these figures were always measured with: the server counts every request it
// receives, and a learned cap's /metrics polls (outside the QPS budget) would be counted too.
const FIXED = { perEngine: { adaptive: false } };
const clients = {
  none: new RemoteInferenceClient({ engines, transport: { shared: false }, limits: FIXED }),
  maxQps: new RemoteInferenceClient({
    engines,
    transport: { shared: false },
    limits: { ...FIXED, maxQps: 10_000_000 },
  }),
};
for (const client of Object.values(clients)) await closedLoop(client, 1000, 1000);
const overhead = { none: [], maxQps: [] };
for (let window = 0; window < rounds * 4; window++) {
  for (const kind of window % 2 ? ['maxQps', 'none'] : ['none', 'maxQps'])
    overhead[kind].push(await closedLoop(clients[kind], 1000, 1000));
}
for (const client of Object.values(clients)) await client.close();
const overheadRow = {
  noLimitRps: Math.round(median(overhead.none)),
  farAboveLoadRps: Math.round(median(overhead.maxQps)),
  windows: overhead.none.length,
};
overheadRow.ratio = Number((overheadRow.farAboveLoadRps / overheadRow.noLimitRps).toFixed(3));
console.log(JSON.stringify({ overhead: overheadRow }));

// 2. Accuracy of a binding limit: requests the server received during the window, after a 1 s settle.
const accuracy = [];
for (const rate of [50, 200, 1000, 5000, 20_000]) {
  const client = new RemoteInferenceClient({
    engines,
    transport: { shared: false },
    limits: { ...FIXED, maxQps: rate },
  });
  const load = closedLoop(client, 1000, windowMs + 1500);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const before = (await control.stats()).total.requests;
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, windowMs));
  const received = (await control.stats()).total.requests - before;
  const seconds = (performance.now() - started) / 1000;
  await load;
  await client.close();
  const row = {
    targetQps: rate,
    achievedQps: Math.round(received / seconds),
    error: Number((received / seconds / rate - 1).toFixed(4)),
  };
  accuracy.push(row);
  console.log(JSON.stringify(row));
}

// 3. A binding concurrency cap, as the server saw it.
await control.resetHighWaterMarks();
const capped = new RemoteInferenceClient({
  engines,
  transport: { shared: false },
  limits: { maxConcurrency: 300, perEngine: { maxConcurrency: 200 } },
});
await closedLoop(capped, 2000, 3000);
await capped.close();
const stats = await control.stats();
const concurrency = {
  maxConcurrency: 300,
  perEngine: 200,
  serverMaxConcurrentTotal: stats.total.maxConcurrent,
  serverMaxConcurrentPerEngine: stats.engines.map((engine) => engine.maxConcurrent),
  exact: stats.total.maxConcurrentExact,
};
console.log(JSON.stringify({ concurrency }));

await control.close();
child.kill('SIGTERM');
const output = {
  benchmark: 'remote-inference-client admission limits against fake-vllm',
  command: `node bench/limits-bench.mjs --window-ms ${windowMs} --rounds ${rounds}`,
  machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version },
  date: new Date().toISOString(),
  overhead: overheadRow,
  accuracy,
  concurrency,
};
writeFileSync(values.out, `${JSON.stringify(output, null, 2)}\n`);
