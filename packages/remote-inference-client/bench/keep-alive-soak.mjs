#!/usr/bin/env node
// Benchmark (not a test): the keep-alive soak. Many concurrent loops for a fixed time against fake-vllm's
// idle-close race (it closes idle keep-alive sockets at random moments, including the instant a request arrives on
// a reused one, as uvicorn does without a Keep-Alive hint). Prints and writes bench/results/keep-alive-soak.json:
// requests, races fake-vllm injected (its own count), the client's re-sends, and every error surfaced (target 0).
// The test suite runs a short, count-bounded version (test/keep-alive-race.test.ts).
//
//   pnpm bench                                       # from the repository root, with the other benchmarks
//   node bench/keep-alive-soak.mjs --loops 2000 --duration-ms 20000
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { expectedCompletion, startFakeVllm } from 'fake-vllm';
import { RemoteInferenceClient } from '../dist/index.js';
import { benchArgs, integerFlag, usageError } from './cli.mjs';

const { values, script } = benchArgs(import.meta.url, {
  loops: { type: 'string', default: '2000' },
  'duration-ms': { type: 'string', default: '20000' },
  'race-rate': { type: 'string', default: '0.05' },
  // Where the JSON result goes (a short check run writes elsewhere, not over the committed results).
  out: { type: 'string', default: fileURLToPath(new URL('./results/keep-alive-soak.json', import.meta.url)) },
});
const loops = integerFlag(script, values, 'loops', 1, 10_000);
const durationMs = integerFlag(script, values, 'duration-ms', 1, 600_000);
const raceRate = Number(values['race-rate']);
if (!(raceRate > 0 && raceRate <= 1)) usageError(script, `--race-rate must be in (0, 1], got ${values['race-rate']}`);

const fake = await startFakeVllm({
  processes: 1,
  ttftMs: 1,
  itlMs: 1,
  jitter: 0,
  keepAliveTimeoutMs: 5000,
  faultProfile: { 'idle-close-race': raceRate },
});
// The fixed per-engine cap (512) this soak has always run with: its subject is keep-alive races, not scheduling.
const client = new RemoteInferenceClient({
  engines: [fake.url],
  limits: { perEngine: { adaptive: false } },
  transport: { shared: false },
});
const cpuBefore = process.cpuUsage();
const deadline = performance.now() + durationMs;
let completed = 0;
let mismatched = 0;
const errors = {};
await Promise.all(
  Array.from({ length: loops }, async (_, loop) => {
    while (performance.now() < deadline) {
      const prompt = [loop + 1, completed % 97];
      try {
        const result = await client.generate({ token_ids: prompt, sampling_params: { max_tokens: 4, seed: 7 } });
        const expected = expectedCompletion(prompt, { seed: 7, maxTokens: 4 }).tokenIds;
        if (result.choices[0].token_ids.join() !== expected.join()) mismatched++;
        completed++;
      } catch (error) {
        errors[error.code ?? error.name] = (errors[error.code ?? error.name] ?? 0) + 1;
      }
      // Idle gaps of up to ~50 ms leave sockets idle long enough to be raced.
      await new Promise((resolve) => setTimeout(resolve, (loop * 7) % 50));
    }
  }),
);
const cpu = process.cpuUsage(cpuBefore);
const stats = client.stats();
const serverStats = await fake.control.stats();
await client.close();
await fake.close();
const result = {
  benchmark: 'remote-inference-client keep-alive soak against fake-vllm idle-close races',
  command: `node bench/keep-alive-soak.mjs --loops ${loops} --duration-ms ${durationMs} --race-rate ${raceRate}`,
  machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version },
  date: new Date().toISOString(),
  requests: completed,
  serverReceived: serverStats.total.requests,
  racesInjected: serverStats.total.faults['idle-close-race'],
  staleRetries: stats.staleRetries,
  retries: stats.retries,
  mismatched,
  errors,
  clientCpuMsPerRequest: Number(((cpu.user + cpu.system) / 1000 / Math.max(1, completed)).toFixed(3)),
};
console.log(
  `keep-alive soak: ${loops} loops for ${durationMs} ms: ${completed} requests, ${result.racesInjected} races injected, ${stats.staleRetries} stale-socket re-sends, ${stats.retries} retries, ${Object.values(errors).reduce((a, b) => a + b, 0)} errors, ${mismatched} mismatched`,
);
writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
