import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { FakeVllmConfigError, startFakeVllm } from '../src/index.js';

// The extension point presets build on: `routes` as objects, as module paths (the form child processes and config
// files can carry), and as static answers in a config file.
const directory = mkdtempSync(join(tmpdir(), 'fake-vllm-routes-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

writeFileSync(
  join(directory, 'echo-routes.mjs'),
  `export const routes = [{
    method: 'POST',
    path: '/echo',
    handler: async ({ request, response, host }) => {
      const body = await request.json();
      response.send(200, { 'content-type': 'application/json' }, JSON.stringify({ body, model: host.options.model }));
    },
  }];\n`,
);

it('loads routes from a module path, in this process and in children', async () => {
  for (const processes of [0, 1]) {
    const fake = await startFakeVllm({ processes, routes: [join(directory, 'echo-routes.mjs')], control: false });
    try {
      const response = await fetch(`${fake.url}/echo`, { method: 'POST', body: '{"a":1}' });
      expect(JSON.parse(await response.text())).toEqual({ body: { a: 1 }, model: 'fake-model' });
    } finally {
      await fake.close();
    }
  }
});

it('refuses a handler function with processes > 0, and a malformed route, naming `routes`', async () => {
  const handler = () => {};
  await expect(startFakeVllm({ processes: 1, routes: [{ method: 'GET', path: '/x', handler }] })).rejects.toThrow(
    /`routes` to be module paths or static routes/,
  );
  await expect(startFakeVllm({ routes: [{ method: 'GET', path: 'x', handler }] })).rejects.toThrow(FakeVllmConfigError);
  await expect(startFakeVllm({ routes: [{ method: 'GET', path: '/x' }] as never })).rejects.toThrow(
    /`routes\[0\]` to be a route with a `handler` function or a `response` object/,
  );
});

it('reads routes from a config file: module paths relative to the file, and static answers', async () => {
  const config = join(directory, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      routes: ['./echo-routes.mjs', { method: 'POST', path: '/finish_session', response: { body: { ok: true } } }],
    }),
  );
  const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
  const child = spawn(process.execPath, [cli, '--config', config, '--no-control'], {
    cwd: tmpdir(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    const url = (JSON.parse(line) as { engines: { url: string }[] }).engines[0]!.url;
    const echoed = await fetch(`${url}/echo`, { method: 'POST', body: '{"b":2}' });
    expect(JSON.parse(await echoed.text()).body).toEqual({ b: 2 });
    const finished = await fetch(`${url}/finish_session`, { method: 'POST', body: '{}' });
    expect(JSON.parse(await finished.text())).toEqual({ ok: true });
  } finally {
    child.kill('SIGKILL');
  }
});
