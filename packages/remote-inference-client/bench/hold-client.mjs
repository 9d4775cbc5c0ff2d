// One client process of hold-bench.mjs: opens `target` requests that the engine holds, reports progress over IPC.
import diagnosticsChannel from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import { RemoteInferenceClient } from '../dist/index.js';

const { url, target, sourceIps } = JSON.parse(process.argv[2]);
const connectStarted = new WeakMap();
const connectMs = [];
diagnosticsChannel.subscribe('undici:client:beforeConnect', ({ connectParams }) =>
  connectStarted.set(connectParams, performance.now()),
);
diagnosticsChannel.subscribe('undici:client:connected', ({ connectParams }) => {
  const started = connectStarted.get(connectParams);
  if (started !== undefined) connectMs.push(performance.now() - started);
});
const rss = () => Number(readFileSync('/proc/self/status', 'utf8').match(/VmRSS:\s+(\d+)/)[1]) / 1024;
const rssBefore = rss();
const client = new RemoteInferenceClient({
  engines: [url],
  sourceIps,
  limits: { perEngine: { maxConcurrency: 1_000_000 } },
  retry: { maxAttempts: 1 },
});
const failures = {};
let firstFailureAt;
for (let index = 0; index < target; index++) {
  client.generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }).catch((error) => {
    failures[error.code] = (failures[error.code] ?? 0) + 1;
    firstFailureAt ??= client.stats().connections.open;
  });
}
const percentile = (list, p) => {
  if (list.length === 0) return null;
  const sorted = [...list].sort((a, b) => a - b);
  return Number(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))].toFixed(2));
};
const report = () => {
  const stats = client.stats();
  process.send({
    type: 'progress',
    open: stats.connections.open,
    inFlight: stats.inFlight,
    failures,
    firstFailureAtOpenConnections: firstFailureAt ?? null,
    rssMb: rss(),
    rssBeforeMb: rssBefore,
    connects: connectMs.length,
    connectP50Ms: percentile(connectMs, 50),
    connectP99Ms: percentile(connectMs, 99),
  });
};
const timer = setInterval(report, 500);
process.on('message', async (message) => {
  if (message !== 'stop') return;
  clearInterval(timer);
  report();
  await client.close();
  process.exit(0);
});
