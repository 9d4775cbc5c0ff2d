#!/usr/bin/env node
// Benchmark (not a test): hold N concurrent in-flight requests from this host to ONE engine address and port.
// Several fake-vllm processes share the port (one listening socket), several client processes (each ~20,000 files
// at most here) bind outbound connections across source IPs. Then one source IP alone, to see where it fails.
//   node bench/hold-bench.mjs [--total 50000] [--clients 4] [--server-processes 8] [--source-ips 127.0.0.2,127.0.0.3]
import { fork } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { startFakeVllm } from 'fake-vllm';
import { benchArgs, integerFlag, usageError } from './cli.mjs';

const { values, script } = benchArgs(import.meta.url, {
  total: { type: 'string', default: '50000' },
  clients: { type: 'string', default: '4' },
  'server-processes': { type: 'string', default: '8' },
  'source-ips': { type: 'string', default: '127.0.0.2,127.0.0.3' },
  'single-ip-target': { type: 'string', default: '30000' },
  'single-only': { type: 'boolean', default: false },
  // Where the JSON result goes (a short check run writes elsewhere, not over the committed results).
  out: { type: 'string', default: fileURLToPath(new URL('./results/hold-bench.json', import.meta.url)) },
});
const total = integerFlag(script, values, 'total', 1, 100_000);
const clientCount = integerFlag(script, values, 'clients', 1, 32);
const serverProcesses = integerFlag(script, values, 'server-processes', 1, 64);
integerFlag(script, values, 'single-ip-target', 1, 100_000);
const sourceIps = values['source-ips'].split(',');
for (const ip of sourceIps) {
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(ip)) {
    usageError(
      script,
      `--source-ips takes loopback addresses (127.0.0.0/8), comma-separated; got ${JSON.stringify(ip)}`,
    );
  }
}
const clientScript = fileURLToPath(new URL('./hold-client.mjs', import.meta.url));
const rssOf = (pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) / 1024;
const childrenOf = (pid) =>
  readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);

const fake = await startFakeVllm({
  processes: serverProcesses,
  sharePort: true,
  ttftMs: 600_000,
  maxNumSeqs: 1_000_000,
  keepAliveTimeoutMs: 600_000,
  control: false,
});
const serverPids = childrenOf(process.pid);
const serverRssBefore = serverPids.reduce((sum, pid) => sum + rssOf(pid), 0);
console.log(`fake-vllm: one address ${fake.url}, ${serverProcesses} processes sharing it`);

async function phase(name, clients) {
  const started = performance.now();
  const progress = new Map();
  const children = clients.map((config, index) => {
    const child = fork(clientScript, [JSON.stringify(config)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.on('message', (message) => {
      if (message.type === 'progress') progress.set(index, message);
    });
    child.on('error', () => {});
    return child;
  });
  const target = clients.reduce((sum, config) => sum + config.target, 0);
  let heldAtMs = null;
  let stableSince = performance.now();
  let lastOpen = -1;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const stats = await fake.control.stats();
    const failed = [...progress.values()].reduce(
      (sum, p) => sum + Object.values(p.failures).reduce((a, b) => a + b, 0),
      0,
    );
    if (stats.total.connectionsOpen !== lastOpen) {
      lastOpen = stats.total.connectionsOpen;
      stableSince = performance.now();
    }
    if (heldAtMs === null && stats.total.running + stats.total.waiting + failed >= target)
      heldAtMs = performance.now() - started;
    if ((heldAtMs !== null && performance.now() - stableSince > 2000) || performance.now() - started > 240_000) break;
  }
  const stats = await fake.control.stats();
  const serverRss = serverPids.reduce((sum, pid) => sum + rssOf(pid), 0);
  const reports = [...progress.values()];
  const failures = {};
  for (const report of reports)
    for (const [code, count] of Object.entries(report.failures)) failures[code] = (failures[code] ?? 0) + count;
  const result = {
    phase: name,
    target,
    heldInFlightByServer: stats.total.running + stats.total.waiting,
    serverConnectionsOpen: stats.total.connectionsOpen,
    serverConnectionsPerProcess: stats.engines.map((engine) => engine.connectionsOpen),
    secondsToHoldAll: heldAtMs === null ? null : Number((heldAtMs / 1000).toFixed(1)),
    failures,
    firstFailureAtOpenConnections:
      reports.map((report) => report.firstFailureAtOpenConnections).find((value) => value !== null) ?? null,
    clientConnectP50Ms: reports.map((report) => report.connectP50Ms),
    clientConnectP99Ms: reports.map((report) => report.connectP99Ms),
    clientRssKbPerConnection: Math.round(
      (reports.reduce((sum, report) => sum + report.rssMb - report.rssBeforeMb, 0) * 1024) /
        Math.max(1, stats.total.connectionsOpen),
    ),
    serverRssKbPerConnection: Math.round(
      ((serverRss - serverRssBefore) * 1024) / Math.max(1, stats.total.connectionsOpen),
    ),
  };
  await Promise.all(
    children.map(
      (child) =>
        new Promise((resolve) => {
          child.once('exit', resolve);
          child.send('stop');
        }),
    ),
  );
  const finals = [...progress.values()];
  result.clientConnectP50Ms = finals.map((report) => report.connectP50Ms);
  result.clientConnectP99Ms = finals.map((report) => report.connectP99Ms);
  result.connectionsTimed = finals.reduce((sum, report) => sum + report.connects, 0);
  console.log(JSON.stringify(result));
  // Wait until the server has seen every connection close before the next phase.
  for (let tries = 0; tries < 120 && (await fake.control.stats()).total.connectionsOpen > 0; tries++)
    await new Promise((resolve) => setTimeout(resolve, 500));
  return result;
}

const perClient = Math.ceil(total / clientCount);
const many = values['single-only']
  ? undefined
  : await phase(
      `${total} in flight, ${clientCount} client processes, source IPs ${sourceIps.join(',')}`,
      Array.from({ length: clientCount }, (_, index) => ({
        url: fake.url,
        target: Math.min(perClient, total - index * perClient),
        sourceIps,
      })),
    );
// One source IP alone: two processes (each under its 20,000-file limit) share 127.0.0.9, so the ~28,000 ports of
// that one IP run out before the files do.
const singleTarget = Number(values['single-ip-target']);
const single = await phase(`one source IP alone (127.0.0.9), ${singleTarget} wanted from 2 processes`, [
  { url: fake.url, target: Math.ceil(singleTarget / 2), sourceIps: ['127.0.0.9'] },
  { url: fake.url, target: Math.floor(singleTarget / 2), sourceIps: ['127.0.0.9'] },
]);
await fake.close();
const output = {
  benchmark: 'concurrent in-flight requests to ONE engine address from one host',
  command: `node bench/hold-bench.mjs --total ${total} --clients ${clientCount} --server-processes ${serverProcesses} --source-ips ${sourceIps.join(',')}`,
  machine: {
    cpus: os.cpus().length,
    node: process.version,
    kernel: os.release(),
    portRange: readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim(),
  },
  date: new Date().toISOString(),
  phases: [many, single],
};
writeFileSync(values.out, `${JSON.stringify(output, null, 2)}\n`);
