// temporary probe (not committed): live heap per in-flight stream
import { writeHeapSnapshot } from 'node:v8';
import { startFakeVllm } from 'fake-vllm';
import { RemoteInferenceClient } from 'remote-inference-client';

const N = Number(process.argv[2] ?? 2000);
const fake = await startFakeVllm({
  engines: 4,
  processes: 1,
  maxNumSeqs: 4096,
  ttftMs: 200,
  itlMs: 2000,
  maxModelLen: 1e6,
  control: false,
});
const client = new RemoteInferenceClient({
  engines: fake.engines.map((e) => e.url),
  limits: { perEngine: { maxConcurrency: 1e6 } },
  onRequestEnd: () => {},
});
let got = 0;
const run = async (i) => {
  const ids = [];
  for await (const c of await client.generate({
    token_ids: [1, 2, 3, i % 100],
    sampling_params: { max_tokens: 8, seed: i },
    stream: true,
  })) {
    ids.push(...(c.choices[0]?.token_ids ?? []));
    got++;
  }
};
const all = Array.from({ length: N }, (_, i) => run(i));
await new Promise((r) => setTimeout(r, 5000));
globalThis.gc?.();
console.log('events so far', got, 'heapUsed MB', (process.memoryUsage().heapUsed / 1e6).toFixed(1));
if (process.argv[3]) writeHeapSnapshot(process.argv[3]);
await Promise.all(all);
globalThis.gc?.();
console.log('after heapUsed MB', (process.memoryUsage().heapUsed / 1e6).toFixed(1));
await client.close();
await fake.close();
