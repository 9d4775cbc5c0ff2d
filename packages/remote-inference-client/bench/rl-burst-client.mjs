// One client of bench/rl-burst.mjs in its own process: bursts of generate requests shaped like RL steps (all at
// once, token ids in and out, streamed=false as SkyRL's client sends them). A first burst (cold), then `steps`
// times: an idle gap longer than the server's keep-alive, a burst, and a burst right after. Prints one JSON line
// with client CPU per request for each burst.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { RemoteInferenceClient } from '../dist/index.js';

const { kind, engines, requests, maxTokens, gapMs, steps = 1 } = JSON.parse(process.argv[2]);
const body = (index) => ({
  token_ids: [1 + (index % 1000), 2, 3, 4],
  sampling_params: { max_tokens: maxTokens, seed: index },
});

let send;
let close = async () => {};
if (kind === 'sdk') {
  const client = new RemoteInferenceClient({ engines, limits: { perEngine: { maxConcurrency: 100_000 } } });
  send = async (index) => {
    const result = await client.generate(body(index));
    return result.choices[0].token_ids.length;
  };
  close = () => client.close();
} else if (kind === 'net-floor') {
  // Not a usable client: close to the least JavaScript a Node process can run per request. One node:net connection per
  // request (no pool, no keep-alive), the request written as one string, the response read up to its
  // content-length. It marks what Node itself costs on this shape, below any HTTP library.
  const targets = engines.map((engine) => new URL(engine));
  send = (index) =>
    new Promise((resolve, reject) => {
      const target = targets[index % targets.length];
      const payload = JSON.stringify(body(index));
      const socket = net.connect(Number(target.port), target.hostname);
      socket.setNoDelay(true);
      socket.write(
        `POST /inference/v1/generate HTTP/1.1\r\nhost: ${target.host}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`,
      );
      let received = Buffer.alloc(0);
      socket.on('data', (chunk) => {
        received = Buffer.concat([received, chunk]);
        const headEnd = received.indexOf('\r\n\r\n');
        if (headEnd < 0) return;
        const length = /\r\ncontent-length: *(\d+)/i.exec(received.subarray(0, headEnd).toString('latin1'));
        if (!length) return reject(new Error('net-floor: response without content-length'));
        const end = headEnd + 4 + Number(length[1]);
        if (received.length < end) return;
        socket.destroy();
        resolve(JSON.parse(received.subarray(headEnd + 4, end).toString()).choices[0].token_ids.length);
      });
      socket.on('error', reject);
    });
} else {
  // Raw undici as a careful user would write it: one stock Agent, round robin over the engines.
  const agent = new Agent({ connections: 50_000, headersTimeout: 0, bodyTimeout: 0 });
  send = async (index) => {
    const response = await request(`${engines[index % engines.length]}/inference/v1/generate`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body(index)),
    });
    const result = await response.body.json();
    return result.choices[0].token_ids.length;
  };
  close = () => agent.close();
}

async function burst() {
  const cpu0 = process.cpuUsage();
  const started = performance.now();
  const tokens = await Promise.all(Array.from({ length: requests }, (_, index) => send(index)));
  const cpu = process.cpuUsage(cpu0);
  const wrong = tokens.filter((count) => count !== maxTokens).length;
  return {
    cpuMsPerRequest: (cpu.user + cpu.system) / 1000 / requests,
    wallMs: performance.now() - started,
    wrong,
  };
}

/**
 * Heap a request holds while in flight (a fourth burst, not timed): every byte of it survives the young
 * generation's collections for the seconds the request lives, so it is copied, promoted and marked. Needs
 * --expose-gc (rl-burst.mjs passes it).
 */
async function heapPerRequest() {
  globalThis.gc();
  const before = process.memoryUsage().heapUsed;
  const all = Promise.all(Array.from({ length: requests }, (_, index) => send(index)));
  await new Promise((resolve) => setTimeout(resolve, 300)); // every request sent, none back (TTFT 500 ms)
  globalThis.gc();
  const bytes = Math.round((process.memoryUsage().heapUsed - before) / requests);
  await all;
  return bytes;
}

const cold = await burst();
const afterIdle = [];
const reused = [];
for (let step = 0; step < steps; step++) {
  await new Promise((resolve) => setTimeout(resolve, gapMs));
  afterIdle.push(await burst());
  reused.push(await burst());
}
const heapBytesPerRequest = typeof globalThis.gc === 'function' ? await heapPerRequest() : undefined;
await close();
process.stdout.write(`${JSON.stringify({ kind, cold, afterIdle, reused, heapBytesPerRequest })}\n`);
