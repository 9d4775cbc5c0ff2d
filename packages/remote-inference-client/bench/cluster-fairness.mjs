#!/usr/bin/env node
// Benchmark (not a test) of the cluster-wide concurrency budget's fairness: 4 processes share `maxConcurrency`
// through a real redis-server, each with the same closed-loop demand against in-process fake-vllm engines.
//  1. equal demand for --equal-ms: completions per process, per second and in total (the target: each within ±10%);
//  2. process 0 goes idle for --idle-ms: how long until the other three have the whole budget in flight;
//  3. process 0 demands again: how long until it has its share (budget / 4) in flight, then equal demand again.
// Needs a built dist/ and redis-server on the PATH.
//   node bench/cluster-fairness.mjs [--budget 40] [--callers 30] [--equal-ms 10000] [--idle-ms 4000]
import { fork, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs, integerFlag } from './cli.mjs';

const { values, script } = benchArgs(import.meta.url, {
  worker: { type: 'boolean', default: false },
  budget: { type: 'string', default: '40' },
  callers: { type: 'string', default: '30' },
  'equal-ms': { type: 'string', default: '10000' },
  'idle-ms': { type: 'string', default: '4000' },
  // Where the JSON result goes (a short check run writes elsewhere, not over the committed results).
  out: { type: 'string', default: fileURLToPath(new URL('./results/cluster-fairness.json', import.meta.url)) },
});

if (values.worker) {
  // One trainer process: CALLERS closed-loop callers while demanding; reports its counts every 20 ms over IPC.
  const { RemoteInferenceClient } = await import('../dist/index.js');
  const { ENGINES, REDIS_URL, BUDGET, CALLERS } = process.env;
  const client = new RemoteInferenceClient({
    engines: ENGINES.split(','),
    // The fixed per-engine cap this benchmark has always run with: its subject is the cluster budget's split.
    limits: {
      maxConcurrency: Number(BUDGET),
      perEngine: { adaptive: false },
      redis: { url: REDIS_URL, id: 'cluster-fairness-bench' },
    },
    transport: { shared: false },
  });
  let demanding = true;
  let stopping = false;
  let completed = 0;
  let failed = 0;
  let resume = [];
  process.on('message', (message) => {
    if (message === 'idle') demanding = false;
    if (message === 'busy' || message === 'stop') {
      demanding = true;
      stopping ||= message === 'stop';
      for (const wake of resume) wake();
      resume = [];
    }
  });
  const report = () => process.send({ completed, failed, inFlight: client.stats().inFlight });
  const reporter = setInterval(report, 20);
  await Promise.all(
    Array.from({ length: Number(CALLERS) }, async () => {
      while (!stopping) {
        if (!demanding) {
          await new Promise((wake) => resume.push(wake));
          continue;
        }
        try {
          await client.generate({ token_ids: [1], sampling_params: { max_tokens: 4 } });
          completed++;
        } catch {
          failed++;
        }
      }
    }),
  );
  clearInterval(reporter);
  report();
  await client.close();
  process.disconnect();
} else {
  const budget = integerFlag(script, values, 'budget', 1, 10_000);
  const callers = integerFlag(script, values, 'callers', 1, 10_000);
  const equalMs = integerFlag(script, values, 'equal-ms', 1000, 600_000);
  const idleMs = integerFlag(script, values, 'idle-ms', 1000, 600_000);
  const processes = 4;
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    console.error('cluster-fairness: redis-server is not installed (apt-get install redis-server)');
    process.exit(1);
  }
  const { startFakeVllm } = await import('fake-vllm');
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  const redis = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  await new Promise((resolve) => setTimeout(resolve, 300));
  // In-process engines: fake-vllm's max-concurrent figure is exact across them. ~25 ms per request.
  const fake = await startFakeVllm({ engines: 2, ttftMs: 5, itlMs: 5, jitter: 0, control: false });
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const reports = Array.from({ length: processes }, () => ({ completed: 0, failed: 0, inFlight: 0 }));
  const workers = Array.from({ length: processes }, (_, index) => {
    const child = fork(fileURLToPath(import.meta.url), ['--worker'], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: {
        ...process.env,
        ENGINES: fake.engines.map((engine) => engine.url).join(','),
        REDIS_URL: `redis://127.0.0.1:${port}`,
        BUDGET: String(budget),
        CALLERS: String(callers),
      },
    });
    child.on('message', (report) => {
      reports[index] = report;
    });
    return child;
  });
  const completedNow = () => reports.map((report) => report.completed);
  const shareOf = (counts) => {
    const total = counts.reduce((sum, count) => sum + count, 0);
    return counts.map((count) => (total === 0 ? 0 : count / total));
  };
  const perSecond = [];
  let second = 0;
  /** Completions per process in each whole second of `ms`, printed as they come. */
  async function record(phase, ms) {
    for (let elapsed = 0; elapsed < ms; elapsed += 1000) {
      const before = completedNow();
      await sleep(1000);
      const counts = completedNow().map((count, index) => count - before[index]);
      const row = {
        second: ++second,
        phase,
        completions: counts,
        shares: shareOf(counts).map((s) => Number(s.toFixed(3))),
      };
      perSecond.push(row);
      console.log(
        `${String(row.second).padStart(3)}s ${phase.padEnd(6)} ${counts.map((count) => String(count).padStart(5)).join(' ')}   shares ${row.shares.map((s) => `${(s * 100).toFixed(1)}%`.padStart(6)).join(' ')}`,
      );
    }
  }
  /** Milliseconds until `condition()` holds, polled every 5 ms against the workers' 20 ms reports. */
  async function msUntil(condition, limitMs) {
    const started = performance.now();
    while (!condition()) {
      if (performance.now() - started > limitMs) return null;
      await sleep(5);
    }
    return Math.round(performance.now() - started);
  }

  console.log(
    `4 processes x ${callers} callers, shared maxConcurrency ${budget}, real redis-server; completions per second:`,
  );
  await sleep(2000); // processes start one after another; the first alone may take the whole budget at first
  await fake.control.resetHighWaterMarks();
  const equalStart = completedNow();
  await record('equal', equalMs);
  const equal = completedNow().map((count, index) => count - equalStart[index]);
  const mean = equal.reduce((sum, count) => sum + count, 0) / processes;
  const equalRow = {
    completions: equal,
    shares: shareOf(equal).map((s) => Number(s.toFixed(4))),
    maxDeviationFromMean: Number((Math.max(...equal.map((count) => Math.abs(count - mean))) / mean).toFixed(4)),
  };
  console.log(
    `equal demand, ${equalMs / 1000} s: completions ${equal.join(', ')}; max deviation from the mean ${(equalRow.maxDeviationFromMean * 100).toFixed(1)}%`,
  );

  workers[0].send('idle');
  const othersFull = msUntil(
    () => reports.slice(1).reduce((sum, report) => sum + report.inFlight, 0) >= budget,
    idleMs,
  );
  await record('idle', idleMs);
  const idleRow = { msUntilOthersHoldWholeBudget: await othersFull };
  console.log(
    `process 0 idle: the other three had all ${budget} in flight after ${idleRow.msUntilOthersHoldWholeBudget} ms`,
  );

  workers[0].send('busy');
  const backStart = performance.now();
  const ownShare = msUntil(() => reports[0].inFlight >= budget / processes, 5000);
  const before = completedNow();
  await record('back', 5000);
  const back = completedNow().map((count, index) => count - before[index]);
  const firstFair = perSecond.find(
    (row) => row.phase === 'back' && Math.abs(row.shares[0] - 1 / processes) <= 0.1 / processes,
  );
  const backRow = {
    msUntilOwnShareInFlight: await ownShare,
    firstWholeSecondWithin10Percent: firstFair
      ? firstFair.second - perSecond.find((row) => row.phase === 'back').second + 1
      : null,
    completionsOver5s: back,
    sharesOver5s: shareOf(back).map((s) => Number(s.toFixed(4))),
  };
  console.log(
    `process 0 busy again: ${budget / processes} in flight after ${backRow.msUntilOwnShareInFlight} ms; its share within ±10% of 25% from second ${backRow.firstWholeSecondWithin10Percent} after its return (${Math.round(performance.now() - backStart)} ms recorded)`,
  );

  await Promise.all(
    workers.map((child) => {
      const exited = once(child, 'exit');
      child.send('stop');
      return exited;
    }),
  );
  const stats = await fake.control.stats();
  const failed = reports.reduce((sum, report) => sum + report.failed, 0);
  console.log(
    `server max concurrent ${stats.total.maxConcurrent} (budget ${budget}, exact: ${stats.total.maxConcurrentExact}); failed requests ${failed}`,
  );
  await fake.close();
  redis.kill('SIGKILL');

  const output = {
    benchmark:
      'remote-inference-client cluster concurrency fairness: 4 processes, one maxConcurrency through redis-server',
    command: `node bench/cluster-fairness.mjs --budget ${budget} --callers ${callers} --equal-ms ${equalMs} --idle-ms ${idleMs}`,
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      node: process.version,
      redis: spawnSync('redis-server', ['--version']).stdout.toString().trim(),
    },
    date: new Date().toISOString(),
    settings: { processes, callersPerProcess: callers, budget, engines: 2, ttftMs: 5, itlMs: 5, maxTokens: 4 },
    equal: equalRow,
    idle: idleRow,
    back: backRow,
    perSecond,
    server: { maxConcurrent: stats.total.maxConcurrent, exact: stats.total.maxConcurrentExact },
    failedRequests: failed,
  };
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(values.out, `${JSON.stringify(output, null, 2)}\n`);
}
