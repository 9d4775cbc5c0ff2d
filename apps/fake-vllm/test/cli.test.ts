import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterEach, expect, it } from 'vitest';
import { ControlClient } from '../src/index.js';
import { post, sseChunks } from './helpers.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

async function startCli(args: string[]) {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const lines = createInterface({ input: child.stdout! });
  const [first] = (await once(lines, 'line')) as [string];
  return { child, ready: JSON.parse(first) as { event: string; engines: { url: string }[]; control: string | null } };
}

it('prints exactly one ready line, and drains in-flight requests on SIGTERM before exiting 0', async () => {
  const { child, ready } = await startCli(['--engines', '2', '--itl-ms', '5', '--ttft-ms', '1']);
  expect(ready.event).toBe('ready');
  expect(ready.engines).toHaveLength(2);
  expect(ready.control).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/);
  const response = await request(`${ready.engines[0]!.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: [1], max_tokens: 60, stream: true }),
  });
  // SIGTERM once the first token is on the wire (not after a sleep): the request is surely in flight.
  let text = '';
  for await (const chunk of response.body) {
    text += String(chunk);
    if (text.includes('data: ') && !child.killed) child.kill('SIGTERM');
  }
  const chunks = sseChunks<{ choices: { finish_reason: string | null }[] }>(text);
  expect(chunks).toHaveLength(60);
  expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('length');
  const [code] = await once(child, 'exit');
  expect(code).toBe(0);
});

it('aborts in-flight requests on SIGTERM with --on-sigterm abort', async () => {
  const { child, ready } = await startCli(['--on-sigterm', 'abort', '--itl-ms', '5']);
  const response = await request(`${ready.engines[0]!.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: [1], max_tokens: 5000, stream: true }),
  });
  // SIGTERM once a token has arrived: vLLM sends no chunk for a choice aborted before its first token.
  let text = '';
  for await (const chunk of response.body) {
    text += String(chunk);
    if (text.includes('data: ') && child.exitCode === null && !child.killed) child.kill('SIGTERM');
  }
  const chunks = sseChunks<{ choices: { finish_reason: string | null }[] }>(text);
  expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('abort');
  expect((await once(child, 'exit'))[0]).toBe(0);
});

it('reads flags from the environment and a fault profile as JSON', async () => {
  const child = spawn(process.execPath, [cli, '--fault-profile', '{"status-503":{"first":1}}'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FAKE_VLLM_MODEL: 'env-model', FAKE_VLLM_ENGINES: '1' },
  });
  children.push(child);
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  const url = JSON.parse(line).engines[0].url as string;
  expect((await post(`${url}/v1/completions`, { prompt: 'x', model: 'env-model', max_tokens: 1 })).status).toBe(503);
  expect((await post(`${url}/v1/completions`, { prompt: 'x', model: 'env-model', max_tokens: 1 })).status).toBe(200);
});

it('exits 2 with the flag named on bad input', async () => {
  const child = spawn(process.execPath, [cli, '--itl-ms', 'fast'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk) => {
    stderr += chunk;
  });
  const [code] = await once(child, 'exit');
  expect(code).toBe(2);
  expect(stderr).toContain('Expected `--itl-ms` to be a number, got `fast`');
});

it('spreads engines over child processes and aggregates their stats', async () => {
  const { child, ready } = await startCli(['--engines', '4', '--processes', '2', '--itl-ms', '1', '--ttft-ms', '1']);
  await Promise.all(ready.engines.map(({ url }) => post(`${url}/v1/completions`, { prompt: 'x', max_tokens: 2 })));
  const control = await ControlClient.connect(ready.control!);
  const stats = await control.stats();
  expect(stats.engines.map((engine) => engine.url)).toEqual(ready.engines.map((engine) => engine.url));
  expect(stats.engines.every((engine) => engine.completed === 1)).toBe(true);
  expect(stats.total.generationTokens).toBe(8);
  expect(stats.total.maxConcurrentExact).toBe(false);
  await control.setFaultProfile({ 'status-429': 1 }, 3);
  expect((await post(`${ready.engines[3]!.url}/v1/completions`, { prompt: 'x', max_tokens: 1 })).status).toBe(429);
  expect((await post(`${ready.engines[2]!.url}/v1/completions`, { prompt: 'x', max_tokens: 1 })).status).toBe(200);
  await control.close();
  child.kill('SIGTERM');
  expect((await once(child, 'exit'))[0]).toBe(0);
});

it('--help lists every flag with its description in one column, at least two spaces after the longest flag', async () => {
  const child = spawn(process.execPath, [cli, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let help = '';
  child.stdout!.on('data', (chunk) => {
    help += chunk;
  });
  const [code] = await once(child, 'exit');
  expect(code).toBe(0);
  const flagLines = help.split('\n').filter((line) => line.startsWith('  --'));
  expect(flagLines.length).toBeGreaterThan(40);
  // `--request-body-timeout-ms <number>` once ran into its description ("<number>A body not fully received").
  const columns = flagLines.map((line) => {
    const match = /^ {2}--[a-z-]+(?: <(?:string|number)>)? {2,}(?=\S)/.exec(line);
    expect(match, line).not.toBeNull();
    return match![0].length;
  });
  expect(new Set(columns).size).toBe(1);
});
