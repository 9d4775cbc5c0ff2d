// `--processes 2`, one child killed (as the OOM killer would): the parent used to die with ERR_IPC_CHANNEL_CLOSED
// as soon as the control channel asked for stats, taking the other child down; without a control client it kept
// advertising the dead engine and logged nothing.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { ControlClient } from '../src/index.js';
import { post, sseChunks } from './helpers.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

it('logs one line, reports the dead engine down, and the parent and the other child keep serving', async () => {
  const parent = spawn(
    process.execPath,
    [cli, '--engines', '2', '--processes', '2', '--itl-ms', '1', '--ttft-ms', '1'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  children.push(parent);
  const stderrLines: string[] = [];
  createInterface({ input: parent.stderr! }).on('line', (line) => stderrLines.push(line));
  const [first] = (await once(createInterface({ input: parent.stdout! }), 'line')) as [string];
  const ready = JSON.parse(first) as { engines: { url: string }[]; control: string };
  const [live, dead] = ready.engines.map((engine) => engine.url) as [string, string];

  expect((await post(`${dead}/v1/completions`, { prompt: [1], max_tokens: 2 })).status).toBe(200);
  const control = await ControlClient.connect(ready.control);
  const before = await control.stats();
  const victim = before.engines[1]!.pid;
  expect(victim).not.toBe(before.engines[0]!.pid);
  expect(victim).not.toBe(parent.pid);

  process.kill(victim, 'SIGKILL');
  await expect
    .poll(() => stderrLines.filter((line) => line.includes('exited')), { timeout: 10_000 })
    .toEqual([
      `fake-vllm: child process ${victim} exited (signal SIGKILL): engine 1 (${dead}) down; 1 of 2 engines still serving`,
    ]);

  // The control client was connected throughout: stats still answer, and say which engine is down.
  const after = await control.stats();
  expect(after.engines.map((engine) => [engine.url, engine.down])).toEqual([
    [live, false],
    [dead, true],
  ]);
  expect(after.total.enginesDown).toBe(1);
  expect(after.engines[1]!.completed).toBe(1); // its counters as last read, not zeros
  expect(after.engines[1]!.running).toBe(0);

  const response = await post(`${live}/v1/completions`, { prompt: [1], max_tokens: 3, stream: true });
  expect(sseChunks(response.text)).toHaveLength(3);
  await expect(control.setFaultProfile('none', 1)).rejects.toThrow(/Engine 1 is down/);
  await control.setFaultProfile({ 'status-429': { first: 1 } });
  expect((await post(`${live}/v1/completions`, { prompt: [1], max_tokens: 1 })).status).toBe(429);
  await control.resetHighWaterMarks();

  await control.close();
  expect(parent.exitCode).toBeNull();
  parent.kill('SIGTERM');
  expect((await once(parent, 'exit'))[0]).toBe(0);
  expect(stderrLines.filter((line) => line.includes('exited'))).toHaveLength(1);
});
