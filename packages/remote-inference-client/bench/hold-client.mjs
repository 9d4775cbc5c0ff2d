// One client process of hold-bench.mjs: opens `target` requests that the engine holds, reports progress over IPC.
import { readFileSync } from 'node:fs';
import { RemoteInferenceClient } from '../dist/index.js';

const { url, target, sourceIps } = JSON.parse(process.argv[2]);
// TCP connect time per connection, from the SDK's own timing (published when each request ends: here at stop).
const connectMs = [];
let lastRss = 0;
const rss = () => {
  try {
    lastRss = Number(readFileSync('/proc/self/status', 'utf8').match(/VmRSS:\s+(\d+)/)[1]) / 1024;
  } catch {
    // EMFILE when this process is at its file limit: keep the last reading
  }
  return lastRss;
};
const rssBefore = rss();
const client = new RemoteInferenceClient({
  engines: [url],
  sourceIps,
  limits: { perEngine: { maxConcurrency: 1_000_000 } },
  retry: { maxAttempts: 1 },
  onRequestEnd: (stats) => {
    if (stats.connectMs !== undefined) connectMs.push(stats.connectMs);
  },
});
const failures = {};
let firstFailureAt;
for (let index = 0; index < target; index++) {
  client.generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }).catch((error) => {
    if (error.code === 'ERR_ABORTED') return; // our own stop
    failures[error.code] = (failures[error.code] ?? 0) + 1;
    firstFailureAt ??= client.stats().connections.open;
  });
}
const percentile = (list, p) => {
  if (list.length === 0) return null;
  const sorted = [...list].sort((a, b) => a - b);
  return Number(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))].toFixed(2));
};
let peakRss = rssBefore;
const report = (extra = {}) => {
  const stats = client.stats();
  peakRss = Math.max(peakRss, rss());
  if (!process.connected) return;
  process.send({
    type: 'progress',
    open: stats.connections.open,
    inFlight: stats.inFlight,
    failures,
    firstFailureAtOpenConnections: firstFailureAt ?? null,
    rssMb: peakRss,
    rssBeforeMb: rssBefore,
    connects: connectMs.length,
    connectP50Ms: percentile(connectMs, 50),
    connectP99Ms: percentile(connectMs, 99),
    ...extra,
  });
};
const timer = setInterval(report, 500);
process.on('message', async (message) => {
  if (message !== 'stop') return;
  clearInterval(timer);
  report();
  await client.close();
  await new Promise((resolve) => setTimeout(resolve, 300));
  report({ final: true });
  setTimeout(() => process.exit(0), 200);
});
