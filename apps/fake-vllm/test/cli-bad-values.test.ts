// Out-of-range CLI values used to exit 1 with a 4-10 line stack: each must be ONE line naming the flag (or the
// variable or config entry), what was expected and what came, and exit 2. So must an address that cannot be bound.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

/** Runs the CLI; with `openFileLimit`, under that `ulimit -n` (soft and hard, so Node cannot raise it). */
async function runCli(args: string[], env: Record<string, string> = {}, openFileLimit?: number) {
  const command =
    openFileLimit === undefined
      ? [process.execPath, cli, ...args]
      : ['/bin/sh', '-c', `ulimit -n ${openFileLimit} && exec "$0" "$@"`, process.execPath, cli, ...args];
  const child = spawn(command[0]!, command.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk) => {
    stdout += chunk;
    // A CLI that started despite the bad value: stop it so the test fails on its exit code, not a hang.
    if (stdout.includes('"event":"ready"')) child.kill('SIGKILL');
  });
  child.stderr!.on('data', (chunk) => {
    stderr += chunk;
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

/** Exit 2, and stderr is exactly one line, with no stack frame. */
function expectOneLine(result: { code: number | null; stderr: string }, pattern: RegExp): void {
  expect(result.stderr).toMatch(pattern);
  expect(result.stderr.endsWith('\n')).toBe(true);
  expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(result.stderr).not.toMatch(/\n\s+at /);
  expect(result.code).toBe(2);
}

describe('an out-of-range value prints one line and exits 2', () => {
  it.each([
    [['--itl-ms', '0.01'], /`--itl-ms` to be a number of milliseconds in 0\.1\.\.\d+, got `0\.01`/],
    [['--itl-ms', '-5'], /`--itl-ms` to be a number of milliseconds in 0\.1\.\.\d+, got `-5`/],
    [['--ttft-ms=-1'], /`--ttft-ms` to be a number of milliseconds in 0\.\.\d+, got `-1`/],
    [['--port', '70000'], /`--port` to be a whole number in 0\.\.65535, got `70000`/],
    [['--engines', '0'], /`--engines` to be a whole number > 0, got `0`/],
    [['--seed', '1.5'], /`--seed` to be an integer, got `1\.5`/],
    [['--nice', '50'], /`--nice` to be a whole number in -20\.\.19, got `50`/],
    [['--model', ''], /`--model` to be a non-empty string, got `""`/],
    [['--backlog', '0'], /`--backlog` to be a whole number > 0, got `0`/],
    [['--control-port', '70000'], /`--control-port` to be a whole number in 0\.\.65535, got `70000`/],
    [['--drain-timeout-ms', '-1'], /`--drain-timeout-ms` to be a number of milliseconds/],
    [['--request-body-timeout-ms', 'x'], /`--request-body-timeout-ms` to be a number, got `x`/],
    [['--fault-profile', 'bogus'], /Invalid `--fault-profile`: .*got `bogus`/],
    [
      ['--fault-profile', '{"stall":2}'],
      /Invalid `--fault-profile`: .*rate of fault `stall` to be within 0\.\.1, got 2/,
    ],
    [
      ['--fault-profile', '{"stall":{"rate":1,"params":{"action":"bogus"}}}'],
      /Invalid `--fault-profile`: .*parameter `action` of fault `stall`.*got `bogus`/,
    ],
    [['--fault-profile', '{"x":'], /`--fault-profile` to be a built-in profile name, a JSON object or @file\.json/],
  ])('%j', async (args, pattern) => {
    expectOneLine(await runCli(args), pattern);
  });

  it('names the environment variable a bad value came from', async () => {
    expectOneLine(await runCli([], { FAKE_VLLM_ITL_MS: 'abc' }), /`FAKE_VLLM_ITL_MS` to be a number, got `abc`/);
  });

  it('names the config file entry a bad value came from', async () => {
    const path = join(tmpdir(), `fake-vllm-config-${process.pid}.json`);
    writeFileSync(path, JSON.stringify({ itlMs: 'fast' }));
    expectOneLine(
      await runCli(['--config', path]),
      /`itlMs` in \S+ to be a number of milliseconds in .*, got `"fast"`/,
    );
    writeFileSync(path, JSON.stringify({ itlMS: 5 }));
    expectOneLine(await runCli(['--config', path]), /Unknown option `itlMS` in the `--config` file/);
  });
});

describe('more engines than the open-file limit allows prints one line and exits 2', () => {
  // `--engines 30000` once built engines for 23 s, then died of EMFILE with a stack (exit 1); `--engines 100000` ran
  // 40 s up to 1.9 GB. Each engine needs a listening socket and a connection: 64 + 2 x 200 > 256.
  it('checked before any engine is built, naming the flag and the limit', async () => {
    expectOneLine(
      await runCli(['--engines', '200'], {}, 256),
      /`--engines` to fit the open-file limit of 256 \(ulimit -n\): .* at most \d+, got 200; raise the limit or spread the engines over more child processes/,
    );
    expectOneLine(
      await runCli(['--processes', '2'], { FAKE_VLLM_ENGINES: '200' }, 256),
      /`FAKE_VLLM_ENGINES` to fit the open-file limit of 256 .*got 200 \(100 in each of 2 processes\)/,
    );
  });

  it('a spread that fits starts', async () => {
    const result = await runCli(['--engines', '200', '--processes', '4', '--no-control'], {}, 256);
    expect(result.stdout).toContain('"event":"ready"');
  });

  it('descriptors that run out at listen time (EMFILE), past the check', async () => {
    // A routes module that takes every free descriptor when imported, after the check and before the engines listen.
    const path = join(tmpdir(), `fake-vllm-hog-files-${process.pid}.mjs`);
    writeFileSync(
      path,
      "import { openSync } from 'node:fs';\nconst held = [];\ntry { for (;;) held.push(openSync('/dev/null', 'r')); } catch {}\nglobalThis.heldFiles = held;\nexport const routes = [];\n",
    );
    expectOneLine(
      await runCli(['--engines', '2', '--routes', path, '--no-control'], {}, 256),
      /Cannot listen on 127\.0\.0\.1:0 \(`--engines`\): too many open files \(EMFILE\), past this process's open-file limit of 256 \(ulimit -n\); serve fewer engines per process/,
    );
  });
});

describe('an address that cannot be bound prints one line and exits 2', () => {
  it('an address not on this host', async () => {
    expectOneLine(
      await runCli(['--host', '8.8.8.8']),
      /Cannot listen on 8\.8\.8\.8:0 \(`--host`, `--port`\): address not available on this host \(EADDRNOTAVAIL\)/,
    );
  });

  it('a control address not on this host names the control flags, not the engine ones', async () => {
    // The control channel's port is 0 here, so the port alone cannot tell which listener failed.
    expectOneLine(
      await runCli(['--control-host', '8.8.8.8']),
      /Cannot listen on 8\.8\.8\.8:0 \(`--control-host`, `--control-port`\): address not available on this host \(EADDRNOTAVAIL\)/,
    );
  });

  it.each([[[]], [['--processes', '2']]])('a port in use %j', async (extra) => {
    const holder = createServer().listen(0, '127.0.0.1');
    await once(holder, 'listening');
    const { port } = holder.address() as { port: number };
    try {
      expectOneLine(
        await runCli(['--port', String(port), ...extra]),
        new RegExp(
          `Cannot listen on 127\\.0\\.0\\.1:${port} \\(\`--host\`, \`--port\`\\): address already in use \\(EADDRINUSE\\)`,
        ),
      );
      expectOneLine(
        await runCli(['--control-port', String(port)]),
        new RegExp(`Cannot listen on 127\\.0\\.0\\.1:${port} \\(\`--control-host\`, \`--control-port\`\\)`),
      );
    } finally {
      holder.close();
    }
  });
});
