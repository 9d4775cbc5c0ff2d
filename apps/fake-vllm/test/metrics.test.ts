import { afterAll, beforeAll, expect, it } from 'vitest';
import { type FakeVllm, startFakeVllm } from '../src/index.js';
import { get, post } from './helpers.js';

// /metrics as vLLM's PrometheusStatLogger writes it (vllm/v1/metrics/loggers.py): names, the model_name and engine
// labels, finished_reason on request_success, bucket sets, and the gauges schedulers and routers read.
let server: FakeVllm;
beforeAll(async () => {
  server = await startFakeVllm({ ttftMs: 1, itlMs: 1, jitter: 0, control: false, maxModelLen: 1000 });
});
afterAll(() => server.close());

const metrics = async () => (await get(`${server.url}/metrics`)).text;
const sample = (text: string, series: string) => {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  if (!line) throw new Error(`no sample ${series}`);
  return line.slice(series.length + 1);
};
const labels = 'model_name="fake-model",engine="0"';

it('labels every vLLM series with model_name and engine; counters are _total under their base TYPE', async () => {
  const text = await metrics();
  expect(text).toContain('# TYPE vllm:num_requests_running gauge\n');
  expect(sample(text, `vllm:num_requests_running{${labels}}`)).toBe('0.0');
  expect(text).toContain('# TYPE vllm:generation_tokens counter\n');
  expect(text).toContain(`vllm:generation_tokens_total{${labels}} `);
  expect(text).toContain(`vllm:prompt_tokens_total{${labels}} `);
  for (const line of text.split('\n').filter((candidate) => candidate.startsWith('vllm:'))) {
    expect(line).toContain(labels);
  }
});

it('request_success counts each finished sequence by finished_reason', async () => {
  const before = await metrics();
  const count = (text: string, reason: string) =>
    Number(sample(text, `vllm:request_success_total{${labels},finished_reason="${reason}"}`));
  await post(`${server.url}/v1/completions`, { prompt: [1], max_tokens: 2, n: 2, temperature: 1 });
  await post(`${server.url}/v1/completions`, { prompt: [1], max_tokens: 5, stop_token_ids: [], ignore_eos: true });
  const after = await metrics();
  expect(count(after, 'length') - count(before, 'length')).toBe(3);
  for (const reason of ['stop', 'abort', 'error', 'repetition'])
    expect(count(after, reason)).toBe(count(before, reason));
  expect(sample(after, `vllm:request_params_n_count{${labels}}`)).toBe(
    `${Number(sample(before, `vllm:request_params_n_count{${labels}}`)) + 2}.0`,
  );
});

it("uses vLLM's bucket sets: request latency 0.3..7680 s, 1-2-5 token counts up to max_model_len", async () => {
  const text = await metrics();
  const bounds = (name: string) =>
    text
      .split('\n')
      .filter((line) => line.startsWith(`${name}_bucket{`))
      .map((line) => /le="([^"]+)"/.exec(line)![1]);
  const latency = ['0.3', '0.5', '0.8', '1.0', '1.5', '2.0', '2.5', '5.0', '10.0', '15.0', '20.0', '30.0', '40.0'];
  const latencyTail = ['50.0', '60.0', '120.0', '240.0', '480.0', '960.0', '1920.0', '7680.0', '+Inf'];
  expect(bounds('vllm:e2e_request_latency_seconds')).toEqual([...latency, ...latencyTail]);
  expect(bounds('vllm:request_queue_time_seconds')).toEqual([...latency, ...latencyTail]);
  const tokens = ['1.0', '2.0', '5.0', '10.0', '20.0', '50.0', '100.0', '200.0', '500.0', '1000.0', '+Inf'];
  expect(bounds('vllm:request_prompt_tokens')).toEqual(tokens);
  expect(bounds('vllm:request_params_n')).toEqual(['1.0', '2.0', '5.0', '10.0', '20.0', '+Inf']);
  expect(bounds('vllm:time_to_first_token_seconds').at(-2)).toBe('2560.0');
  expect(bounds('vllm:inter_token_latency_seconds').at(-2)).toBe('80.0');
});

it('exports the gauges routers read: waiting by reason, KV-cache usage, prefix cache, preemptions, sleep state', async () => {
  let text = await metrics();
  expect(sample(text, `vllm:num_requests_waiting_by_reason{${labels},reason="capacity"}`)).toBe('0.0');
  expect(sample(text, `vllm:num_requests_waiting_by_reason{${labels},reason="deferred"}`)).toBe('0.0');
  expect(sample(text, `vllm:kv_cache_usage_perc{${labels}}`)).toBe('0.0');
  expect(text).toContain(`vllm:prefix_cache_queries_total{${labels}} `);
  expect(sample(text, `vllm:prefix_cache_hits_total{${labels}}`)).toBe('0.0');
  expect(sample(text, `vllm:num_preemptions_total{${labels}}`)).toBe('0.0');
  const sleepState = (state: string) => sample(text, `vllm:engine_sleep_state{${labels},sleep_state="${state}"}`);
  expect([sleepState('awake'), sleepState('weights_offloaded'), sleepState('discard_all')]).toEqual([
    '1.0',
    '0.0',
    '0.0',
  ]);
  await post(`${server.url}/sleep?level=2`, {});
  text = await metrics();
  expect([sleepState('awake'), sleepState('weights_offloaded'), sleepState('discard_all')]).toEqual([
    '0.0',
    '0.0',
    '1.0',
  ]);
  await post(`${server.url}/wake_up`, {});
  // Requests held while paused wait for capacity.
  await post(`${server.url}/pause?mode=keep`, {});
  const pending = post(`${server.url}/v1/completions`, { prompt: [1], max_tokens: 1 });
  for (let polls = 0; ; polls++) {
    text = await metrics();
    if (sample(text, `vllm:num_requests_waiting{${labels}}`) === '1.0') break;
    if (polls > 200) throw new Error('the request never waited');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  expect(sample(text, `vllm:num_requests_waiting_by_reason{${labels},reason="capacity"}`)).toBe('1.0');
  await post(`${server.url}/resume`, {});
  await pending;
});
