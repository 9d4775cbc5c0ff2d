#!/usr/bin/env node
// Benchmark (not a test): client CPU per request on the traffic RL trainers send. A step fires N token-in/token-out
// generate requests at once to a fleet (each lives for TTFT + max_tokens x ITL), the trainer then idles through
// training for longer than any keep-alive, and the next step fires again. Columns: the first burst (cold); then,
// for each of --steps steps, a burst after an idle gap longer than the server's keep-alive and a burst right after
// (connections reused). The first step's two bursts and the later steps' (median) are reported apart: a trainer
// runs hundreds of steps, and Node's JIT is still compiling the request path during the first.
// Clients, each in its own process, alternating in rounds: this SDK, raw undici (stock Agent), and an aiohttp
// client written the way SkyRL's is (Debian's python3-aiohttp), and net-floor: not a client but close to the least
// a Node process can run per request (node:net, one connection per request, no HTTP library), Node's floor for a
// cold burst on this shape. Prints medians and ratios and writes
// bench/results/rl-burst.json. The fake engines run in their own processes at nice 19. A fourth, untimed burst
// measures the heap each in-flight request holds (Node clients).
//
//   pnpm bench                                   # with the other benchmarks
//   node bench/rl-burst.mjs --rounds 3 --steps 3 --requests 2000
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { benchArgs, integerFlag, usageError } from './cli.mjs';

const { values, script } = benchArgs(import.meta.url, {
  rounds: { type: 'string', default: '3' },
  steps: { type: 'string', default: '3' },
  requests: { type: 'string', default: '2000' },
  'max-tokens': { type: 'string', default: '16' },
  'gap-ms': { type: 'string', default: '6000' },
  // Extra V8/Node flags for both Node clients (SDK and undici alike), e.g. --node-args=--max-semi-space-size=32 (with '=': the value starts with --).
  'node-args': { type: 'string', default: '' },
  // Where the JSON result goes (a short check run writes elsewhere, not over the committed results).
  out: { type: 'string', default: fileURLToPath(new URL('./results/rl-burst.json', import.meta.url)) },
});
const rounds = integerFlag(script, values, 'rounds', 1, 20);
const steps = integerFlag(script, values, 'steps', 1, 20);
const requests = integerFlag(script, values, 'requests', 1, 20_000);
const maxTokens = integerFlag(script, values, 'max-tokens', 1, 4096);
const gapMs = integerFlag(script, values, 'gap-ms', 1, 600_000);
const nodeArgs = values['node-args'].split(' ').filter(Boolean);
if (nodeArgs.some((arg) => !arg.startsWith('--'))) {
  usageError(script, `--node-args takes flags such as --max-semi-space-size=32, got ${values['node-args']}`);
}
const python = '/usr/bin/python3';
let kinds = ['sdk', 'undici', 'net-floor', 'aiohttp'];
try {
  execFileSync(python, ['-c', 'import aiohttp'], { stdio: 'ignore' });
} catch {
  process.stderr.write('rl-burst: no aiohttp for /usr/bin/python3 (apt-get install python3-aiohttp): skipping it\n');
  kinds = ['sdk', 'undici', 'net-floor'];
}

// SkyRL's e2e load pattern: 20 engines, TTFT 500 ms, ITL 250 ms; keep-alive 5 s as uvicorn's.
const fakeCli = createRequire(import.meta.url)
  .resolve('fake-vllm/package.json')
  .replace(/package\.json$/, 'dist/cli.js');
const fake = spawn(
  process.execPath,
  [
    fakeCli,
    '--engines',
    '20',
    '--processes',
    '2',
    '--nice',
    '19',
    '--ttft-ms',
    '500',
    '--itl-ms',
    '250',
    '--jitter',
    '0',
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const [line] = await once(createInterface({ input: fake.stdout }), 'line');
const engines = JSON.parse(line).engines.map((engine) => engine.url);

const client = fileURLToPath(new URL('./rl-burst-client.mjs', import.meta.url));
const aiohttpClient = fileURLToPath(new URL('./rl_burst_aiohttp.py', import.meta.url));
function run(kind) {
  const config = JSON.stringify({ kind, engines, requests, maxTokens, gapMs, steps });
  const output =
    kind === 'aiohttp'
      ? execFileSync(python, [aiohttpClient, config], { encoding: 'utf8' })
      : execFileSync(process.execPath, ['--expose-gc', ...nodeArgs, client, config], { encoding: 'utf8' });
  return JSON.parse(output.trim().split('\n').at(-1));
}

// cold: the process's first burst; afterIdle/reused: the first step's; ...Later: every later step's.
const phases = ['cold', 'afterIdle', 'reused', ...(steps > 1 ? ['afterIdleLater', 'reusedLater'] : [])];
const samples = Object.fromEntries(kinds.map((kind) => [kind, Object.fromEntries(phases.map((phase) => [phase, []]))]));
const bursts = (result) => ({
  cold: [result.cold],
  afterIdle: [result.afterIdle[0]],
  reused: [result.reused[0]],
  afterIdleLater: result.afterIdle.slice(1),
  reusedLater: result.reused.slice(1),
});
const heap = {};
for (let round = 0; round < rounds; round++) {
  for (const kind of round % 2 === 0 ? kinds : [...kinds].reverse()) {
    const result = run(kind);
    console.log(JSON.stringify(result));
    const byPhase = bursts(result);
    for (const phase of phases) {
      for (const burst of byPhase[phase]) {
        if (burst.wrong > 0) throw new Error(`${kind} ${phase}: ${burst.wrong} responses with the wrong length`);
        samples[kind][phase].push(burst.cpuMsPerRequest);
      }
    }
    if (result.heapBytesPerRequest !== undefined) {
      heap[kind] ??= [];
      heap[kind].push(result.heapBytesPerRequest);
    }
  }
}
fake.kill('SIGTERM');
await once(fake, 'exit');

const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
const medians = Object.fromEntries(
  kinds.map((kind) => [
    kind,
    Object.fromEntries(phases.map((phase) => [phase, Number(median(samples[kind][phase]).toFixed(3))])),
  ]),
);
const ratio = (a, b) => Number((a / b).toFixed(2));
const result = {
  benchmark: 'client CPU per request on RL-shaped bursts (2,000 long generate requests at once, idle gap, again)',
  command: `node bench/rl-burst.mjs --rounds ${rounds} --steps ${steps} --requests ${requests} --max-tokens ${maxTokens} --gap-ms ${gapMs}${nodeArgs.length ? ` --node-args='${nodeArgs.join(' ')}'` : ''}`,
  machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version },
  date: new Date().toISOString(),
  fleet: '20 fake-vllm engines in 2 processes at nice 19, TTFT 500 ms, ITL 250 ms, keep-alive 5 s',
  // Medians over rounds; the ...Later columns over every later step of every round.
  cpuMsPerRequest: medians,
  // Every burst's figure behind the medians, in run order (the spread between rounds is large on 2 cores).
  samples: Object.fromEntries(
    kinds.map((kind) => [
      kind,
      Object.fromEntries(phases.map((phase) => [phase, samples[kind][phase].map((value) => Number(value.toFixed(3)))])),
    ]),
  ),
  // Heap held per in-flight request (median over rounds), from a fourth, untimed burst.
  heapBytesPerInFlightRequest: Object.fromEntries(Object.entries(heap).map(([kind, list]) => [kind, median(list)])),
  sdkVsUndici: Object.fromEntries(phases.map((phase) => [phase, ratio(medians.sdk[phase], medians.undici[phase])])),
  ...(medians.aiohttp
    ? {
        aiohttpVsSdk: Object.fromEntries(
          phases.map((phase) => [phase, ratio(medians.aiohttp[phase], medians.sdk[phase])]),
        ),
        // The same ratio for Node's floor (net-floor): what any client built on node:net could reach at best.
        aiohttpVsNetFloor: Object.fromEntries(
          phases.map((phase) => [phase, ratio(medians.aiohttp[phase], medians['net-floor'][phase])]),
        ),
      }
    : {}),
};
const headings = {
  cold: 'cold burst',
  afterIdle: 'step 1 after idle gap',
  reused: 'step 1 reused',
  afterIdleLater: `steps 2-${steps} after idle gap`,
  reusedLater: `steps 2-${steps} reused`,
};
console.log(`\n| client | ${phases.map((phase) => `${headings[phase]} ms/req`).join(' | ')} |`);
console.log(`| --- | ${phases.map(() => '---').join(' | ')} |`);
for (const kind of kinds) console.log(`| ${kind} | ${phases.map((phase) => medians[kind][phase]).join(' | ')} |`);
console.log(`heap held per in-flight request, bytes: ${JSON.stringify(result.heapBytesPerInFlightRequest)}`);
console.log(
  `SDK / undici: ${JSON.stringify(result.sdkVsUndici)}${result.aiohttpVsSdk ? `; aiohttp / SDK: ${JSON.stringify(result.aiohttpVsSdk)}; aiohttp / net-floor: ${JSON.stringify(result.aiohttpVsNetFloor)}` : ''}`,
);
writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
