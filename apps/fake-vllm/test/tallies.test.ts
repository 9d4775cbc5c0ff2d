import { afterAll, beforeAll, expect, it } from 'vitest';
import { type FakeVllm, MAX_TALLIES, startFakeVllm, TALLY_HEADER } from '../src/index.js';
import { post } from './helpers.js';

let server: FakeVllm;
beforeAll(async () => {
  server = await startFakeVllm({ engines: 2, ttftMs: 1, itlMs: 1, jitter: 0 });
});
afterAll(() => server.close());

const tallies = async (engine: number) => (await server.control.stats()).engines[engine]!.tallies;

it('counts requests by their x-fake-tally label: received, and answered whole only when nothing broke them', async () => {
  const url = server.engines[0]!.url;
  const tagged = (fault?: string) => ({ [TALLY_HEADER]: 'step-1', ...(fault ? { 'x-fake-fault': fault } : {}) });
  const body = { prompt: [1, 2], max_tokens: 4 };
  expect((await post(`${url}/v1/completions`, body, tagged())).status).toBe(200);
  expect((await post(`${url}/v1/completions`, { ...body, stream: true }, tagged())).status).toBe(200);
  expect((await post(`${url}/v1/completions`, body, tagged('status-503'))).status).toBe(503);
  await post(`${url}/v1/completions`, { ...body, stream: true }, tagged('malformed-chunk; after_tokens=1'));
  await post(`${url}/v1/completions`, body, tagged('malformed-chunk'));
  await expect(post(`${url}/v1/completions`, body, tagged('reset-before-response'))).rejects.toThrow();
  // Untagged and differently tagged requests count elsewhere.
  await post(`${url}/v1/completions`, body);
  await post(`${url}/v1/completions`, body, { [TALLY_HEADER]: 'step-2' });
  expect(await tallies(0)).toEqual({ 'step-1': { received: 6, answered: 2 }, 'step-2': { received: 1, answered: 1 } });
  expect(await tallies(1)).toEqual({});
});

it('keeps the last MAX_TALLIES labels, so a client cannot grow its memory without bound', async () => {
  const url = server.engines[1]!.url;
  for (let label = 0; label < MAX_TALLIES + 3; label++) {
    await post(`${url}/v1/completions`, { prompt: [1], max_tokens: 1 }, { [TALLY_HEADER]: `label-${label}` });
  }
  const kept = Object.keys(await tallies(1));
  expect(kept).toHaveLength(MAX_TALLIES);
  expect(kept[0]).toBe('label-3');
  expect(kept.at(-1)).toBe(`label-${MAX_TALLIES + 2}`);
});
