#!/usr/bin/env node
// Benchmark (not a test): one fake-vllm process holding N open streaming connections, its CPU per streamed event,
// and the highest event rate it sustains. The server runs in its own process; CPU is read from /proc/<pid>/stat.
// Events are what the client received (SSE events, counted by their blank-line ends on every socket), and the rate
// is the least-squares slope of that count sampled every 10 ms over the window: the count rises in steps of one
// engine step's worth (10,000 events), so two end points alone resolve a 5 s window only to about one step (±4% at
// ITL 200 ms). The server's own count of generated tokens is reported beside it: at full fidelity each token is one
// event (a stream the client does not read would merge tokens into fewer events).
//
//   node bench/connections.mjs [--connections 10000] [--window-ms 5000] [--itl-ms 400,200,175,150,125,100,50]
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ControlClient } from '../dist/index.js';

// A usage mistake is one line and exit 2, before anything starts or is written.
const usageError = (message) => {
  process.stderr.write(`connections: ${message}\n`);
  process.exit(2);
};
let values;
try {
  ({ values } = parseArgs({
    options: {
      connections: { type: 'string', default: '10000' },
      'window-ms': { type: 'string', default: '5000' },
      'itl-ms': { type: 'string', default: '400,200,175,150,125,100,50' },
      out: { type: 'string', default: fileURLToPath(new URL('./results/connections.json', import.meta.url)) },
    },
  }));
} catch (error) {
  usageError(`${error.message.split(/\.\s/)[0]} (the flags are in this script's header comment)`);
}
const connections = Number(values.connections);
const windowMs = Number(values['window-ms']);
const itls = values['itl-ms'].split(',').map(Number);
if (!Number.isInteger(connections) || connections < 1 || connections > 15_000) {
  usageError(`--connections must be an integer in 1..15000, got ${JSON.stringify(values.connections)}`);
}
if (!Number.isInteger(windowMs) || windowMs < 100 || windowMs > 600_000) {
  usageError(`--window-ms must be an integer in 100..600000, got ${JSON.stringify(values['window-ms'])}`);
}
if (itls.length === 0 || itls.some((itl) => !Number.isInteger(itl) || itl < 1 || itl > 60_000)) {
  usageError(`--itl-ms takes whole milliseconds in 1..60000, comma-separated; got ${JSON.stringify(values['itl-ms'])}`);
}
const ticksPerSecond = 100; // Linux USER_HZ for /proc/<pid>/stat

function cpuMs(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond; // utime + stime
}

function rssMb(pid) {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS'));
  return Number(line.split(/\s+/)[1]) / 1024;
}

/** Least-squares slope of [ms, count] samples, per second. */
function slopePerSecond(samples) {
  const n = samples.length;
  let sumT = 0;
  let sumC = 0;
  for (const [t, c] of samples) {
    sumT += t;
    sumC += c;
  }
  const meanT = sumT / n;
  const meanC = sumC / n;
  let covariance = 0;
  let variance = 0;
  for (const [t, c] of samples) {
    covariance += (t - meanT) * (c - meanC);
    variance += (t - meanT) ** 2;
  }
  return (covariance / variance) * 1000;
}

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const server = spawn(
  process.execPath,
  [
    cli,
    '--max-num-seqs',
    String(connections + 10),
    '--max-model-len',
    '2000000',
    '--ttft-ms',
    '1',
    '--itl-ms',
    String(itls[0]),
    '--jitter',
    '0',
    '--keep-alive-timeout-ms',
    '600000',
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const [line] = await once(createInterface({ input: server.stdout }), 'line');
const ready = JSON.parse(line);
const { port } = new URL(ready.engines[0].url);
const control = await ControlClient.connect(ready.control);
const rssIdle = rssMb(server.pid);

// Open the connections paced (500 connects in flight at most) so the accept queue never overflows.
const body = JSON.stringify({ prompt: [1, 2, 3], max_tokens: 1_000_000, stream: true });
const requestBytes = `POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
const sockets = [];
let bytes = 0;
let events = 0;
let errors = 0;
const EVENT_END = Buffer.from('\n\n');
const NEWLINE = 10;
/** Counts the SSE events that end in a chunk; an event's blank line may be split between two chunks. */
function countEvents(socket, chunk) {
  if (socket.endsWithNewline && chunk[0] === NEWLINE) events++;
  for (let index = chunk.indexOf(EVENT_END); index !== -1; index = chunk.indexOf(EVENT_END, index + 2)) events++;
  socket.endsWithNewline = chunk[chunk.length - 1] === NEWLINE;
}
const connectStarted = performance.now();
for (let opened = 0; opened < connections; ) {
  const batch = Math.min(500, connections - opened);
  await Promise.all(
    Array.from(
      { length: batch },
      () =>
        new Promise((resolve) => {
          const socket = connect({ port: Number(port), host: '127.0.0.1', noDelay: true }, () => {
            socket.write(requestBytes);
            resolve();
          });
          socket.endsWithNewline = false;
          socket.on('data', (chunk) => {
            bytes += chunk.length;
            countEvents(socket, chunk);
          });
          socket.on('error', () => {
            errors++;
            resolve();
          });
          sockets.push(socket);
        }),
    ),
  );
  opened += batch;
}
const connectMs = performance.now() - connectStarted;
await new Promise((resolve) => setTimeout(resolve, 1000));
const held = (await control.stats()).total;

const steps = [];
for (const itlMs of itls) {
  await control.setLatency({ itlMs });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const tokens0 = (await control.stats()).total.generationTokens;
  const cpu0 = cpuMs(server.pid);
  const started = performance.now();
  const samples = [];
  const sampler = setInterval(() => samples.push([performance.now() - started, events]), 10);
  await new Promise((resolve) => setTimeout(resolve, windowMs));
  clearInterval(sampler);
  const elapsedMs = performance.now() - started;
  const cpu1 = cpuMs(server.pid);
  const stats = (await control.stats()).total;
  const tokens = stats.generationTokens - tokens0;
  const targetRate = (stats.running * 1000) / itlMs;
  const rate = slopePerSecond(samples);
  const step = {
    itlMs,
    streams: stats.running,
    targetEventsPerSecond: Math.round(targetRate),
    eventsPerSecond: Math.round(rate),
    achievedRatio: Number((rate / targetRate).toFixed(3)),
    generatedTokensPerSecond: Math.round((tokens * 1000) / elapsedMs),
    serverCpuPercent: Number((((cpu1 - cpu0) / elapsedMs) * 100).toFixed(1)),
    serverCpuMicrosecondsPerEvent: Number((((cpu1 - cpu0) * 1000) / ((rate * elapsedMs) / 1000)).toFixed(2)),
    serverRssMb: Math.round(rssMb(server.pid)),
  };
  steps.push(step);
  console.log(JSON.stringify(step));
}

for (const socket of sockets) socket.destroy();
await control.close();
server.kill('SIGTERM');
await once(server, 'exit');

const sustained = steps.filter((step) => step.achievedRatio >= 0.95);
const result = {
  benchmark: 'fake-vllm connections and event rate (one server process)',
  command: `node bench/connections.mjs --connections ${connections} --window-ms ${windowMs} --itl-ms ${itls.join(',')}`,
  machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version, kernel: os.release() },
  date: new Date().toISOString(),
  connections,
  connectionsHeldByServer: held.connectionsOpen,
  streamsRunning: held.running,
  clientErrors: errors,
  connectMs: Math.round(connectMs),
  serverRssIdleMb: Math.round(rssIdle),
  serverRssPerConnectionKb: Math.round(((steps[0].serverRssMb - rssIdle) * 1024) / connections),
  clientBytesReceived: bytes,
  clientEventsReceived: events,
  steps,
  highestSustainedEventsPerSecond: sustained.length ? Math.max(...sustained.map((step) => step.eventsPerSecond)) : 0,
  highestObservedEventsPerSecond: Math.max(...steps.map((step) => step.eventsPerSecond)),
};
writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
console.log(
  `\nheld ${held.connectionsOpen} connections (${held.running} streams) in one process; connect ${result.connectMs} ms; errors ${errors}`,
);
console.log(
  '| ITL ms | streams | target ev/s | received ev/s | ratio | generated tokens/s | server CPU % | CPU µs/event | RSS MB |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const s of steps) {
  console.log(
    `| ${s.itlMs} | ${s.streams} | ${s.targetEventsPerSecond} | ${s.eventsPerSecond} | ${s.achievedRatio} | ${s.generatedTokensPerSecond} | ${s.serverCpuPercent} | ${s.serverCpuMicrosecondsPerEvent} | ${s.serverRssMb} |`,
  );
}
console.log(
  `highest sustained (>= 95% of target): ${result.highestSustainedEventsPerSecond} events/s; written to ${values.out}`,
);
