// One benchmark client in its own process: runs closed-loop requests for a duration (or one burst) and prints
// one JSON line with requests completed, client CPU and wall time. Driven by client-bench.mjs.
import { performance } from 'node:perf_hooks';
import OpenAI from 'openai';
import { Agent, request } from 'undici';
import { RemoteInferenceClient } from '../dist/index.js';

const config = JSON.parse(process.argv[2]);
const { kind, url, concurrency, durationMs, stream, burst } = config;
const body = {
  model: 'fake-model',
  prompt: [1, 2, 3],
  max_tokens: stream ? 8 : 1,
  ...(stream ? { stream: true } : {}),
};

let send;
let close = async () => {};
if (kind === 'sdk') {
  const client = new RemoteInferenceClient({ engines: [url], limits: { perEngine: { maxConcurrency: 100_000 } } });
  send = async () => {
    if (!stream) return client.completions.create(body);
    for await (const _ of await client.completions.create(body)) {
    }
  };
  close = () => client.close();
} else if (kind === 'undici') {
  const agent = new Agent({ connections: 50_000 });
  send = async () => {
    const response = await request(`${url}/v1/completions`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!stream) return response.body.json();
    for await (const _ of response.body) {
    }
  };
  close = () => agent.close();
} else {
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
  send = async () => {
    if (!stream) return client.completions.create(body);
    for await (const _ of await client.completions.create(body)) {
    }
  };
}

// Warm up connections so every client is measured in steady state (not for a burst: opening the connections
// is part of putting the first wave on the wire).
if (!burst) await Promise.all(Array.from({ length: Math.min(concurrency, 200) }, () => send()));
else process.stdout.write('{"event":"burst-start"}\n');
const cpu0 = process.cpuUsage();
const start = performance.now();
let completed = 0;
let errors = 0;
if (burst) {
  // Everything at once: how long the client itself takes to put the whole wave on the wire. Measured once the
  // calls and every microtask they queued have run: a client that defers its dispatch to a microtask (an `await`
  // before the send) would otherwise leave that work out, as this SDK's did before 2026-12-06.
  const wave = Array.from({ length: burst }, () =>
    send().then(
      () => completed++,
      () => errors++,
    ),
  );
  await new Promise((resolve) => setImmediate(resolve));
  const issuedMs = performance.now() - start;
  const cpuIssue = process.cpuUsage(cpu0);
  await Promise.all(wave);
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(
    `${JSON.stringify({ kind, completed, errors, issueMs: issuedMs, issueCpuMs: (cpuIssue.user + cpuIssue.system) / 1000, wallMs: performance.now() - start, cpuMs: (cpu.user + cpu.system) / 1000 })}\n`,
  );
} else {
  const deadline = start + durationMs;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        try {
          await send();
          completed++;
        } catch {
          errors++;
        }
      }
    }),
  );
  const wallMs = performance.now() - start;
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(
    `${JSON.stringify({ kind, completed, errors, wallMs, cpuMs: (cpu.user + cpu.system) / 1000 })}\n`,
  );
}
await close();
process.exit(0);
