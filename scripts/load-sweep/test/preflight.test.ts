import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { ephemeralPortRange } from 'remote-inference-client';
import { afterEach, describe, expect, it } from 'vitest';
import { parseSweepArgs, SweepConfigError } from '../src/options.js';
import { checkTargets, MAX_MODELS_BODY_BYTES, preflight } from '../src/preflight.js';

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A loopback server whose every request is handled by `handle`. */
async function serve(handle: Parameters<typeof createServer>[1]): Promise<string> {
  const server = createServer(handle);
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('port budget: the SDK rule, ports x source IPs shared by ALL engines', () => {
  const range = ephemeralPortRange() ?? { low: 32768, high: 60999, size: 28232 };
  const peak = String(range.size + 1000);
  const flags = ['--steps', peak, '--fake-engines', '20', '--workers', '16'];

  it('--source-ips auto:1 with 20 engines: more connections than one IP has ports fails preflight', () => {
    // Checked per engine (the old rule), ~1,460 connections per engine fit 28,232 ports x 1 IP easily; at run time
    // the SDK binds every connection to that one IP, whose ports all 20 engines share.
    const options = parseSweepArgs([...flags, '--source-ips', 'auto:1']).options;
    expect(() => preflight(options, 16, 20_000, range)).toThrow(SweepConfigError);
    expect(() => preflight(options, 16, 20_000, range)).toThrow(
      `~${peak} connections at the peak step exceed this host's port budget of ${range.size} (${range.size} ephemeral ports ${range.low}-${range.high} x 1 source IP(s), shared by all 20 engines): pass --source-ips auto:2 or more`,
    );
    // Two source IPs double the budget; without source IPs each engine has its own range.
    expect(() =>
      preflight(parseSweepArgs([...flags, '--source-ips', 'auto:2']).options, 16, 20_000, range),
    ).not.toThrow();
    expect(() => preflight(parseSweepArgs(flags).options, 16, 20_000, range)).not.toThrow();
    // Without source IPs, one engine has one range.
    expect(() => preflight(parseSweepArgs([...flags, '--fake-engines', '1']).options, 16, 20_000, range)).toThrow(
      /x 1 engine\(s\), each with its own range\): add engines or pass --source-ips auto:2/,
    );
  });
});

describe('--target preflight reads a bounded answer', () => {
  const targetOptions = (url: string) => parseSweepArgs(['--target', url]).options;

  it('a /v1/models body that never ends is cut at its size cap', async () => {
    let written = 0;
    const url = await serve((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.write('{"data":[');
      const chunk = Buffer.alloc(64 * 1024, ' ');
      const more = () => {
        while (!response.destroyed && written < 64 * MAX_MODELS_BODY_BYTES) {
          written += chunk.length;
          if (!response.write(chunk)) return void response.once('drain', more);
        }
      };
      more();
    });
    await expect(checkTargets(targetOptions(url), 30_000)).rejects.toThrow(
      `answered GET /v1/models with more than ${MAX_MODELS_BODY_BYTES} bytes`,
    );
    // The server wrote far less than its 64 MiB before the sweep hung up.
    expect(written).toBeLessThan(16 * MAX_MODELS_BODY_BYTES);
  });

  it('a /v1/models body that trickles forever is cut at the deadline', async () => {
    const url = await serve((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      const timer = setInterval(() => response.write(' '), 20);
      response.on('close', () => clearInterval(timer));
    });
    await expect(checkTargets(targetOptions(url), 300)).rejects.toThrow(
      /did not answer GET \/v1\/models \(no whole answer within 300 ms\)/,
    );
  });

  it.each([
    ['<html>hello</html>', /answered GET \/v1\/models with something that is not JSON \("<html>hello<\/html>"\.\.\.\)/],
    ['{"data":"x"}', /answered GET \/v1\/models without a `data` list of models \(got \{"data":"x"\}\)/],
    ['null', /without a `data` list/],
  ])('a /v1/models answer %s is a one-line error', async (body, message) => {
    const url = await serve((_request, response) => response.end(body));
    await expect(checkTargets(targetOptions(url))).rejects.toThrow(SweepConfigError);
    await expect(checkTargets(targetOptions(url))).rejects.toThrow(message);
  });
});

describe('the CLI: bad input is one line on stderr and exit 2, before anything starts', () => {
  const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
  const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 60_000 });

  it.each([
    [['--steps', '1000000000'], /^load-sweep: Expected `--steps` to be at most 50 whole numbers in 1\.\.200000/],
    [['--fake-itl-ms', '0'], /^load-sweep: Invalid `--fake-itl-ms`/],
    [['--faults', 'bogus'], /^load-sweep: Invalid `--faults`/],
    [['--faults', '{"x":'], /^load-sweep: Expected `--faults` to be a built-in profile name/],
    [['--workers', '0.5'], /^load-sweep: Expected `--workers` to be a whole number/],
    [['--output-tokens', '0'], /^load-sweep: Expected `--output-tokens`/],
    [['--prompt-tokens', 'uniform:10:1'], /^load-sweep: Expected `--prompt-tokens`.*MIN is above MAX/],
    [['--bogus-flag'], /^load-sweep: Unknown option '--bogus-flag'/],
    [['--steps', '5', '--source-ips', '8.8.8.8'], /^load-sweep: Invalid `--source-ips`: .*assigned to this host/],
    [
      ['--steps', '5', '--out', '/dev/null/x'],
      /^load-sweep: Cannot write results to `--out \/dev\/null\/x` \(ENOTDIR\)/,
    ],
  ])('%j', (args, message) => {
    const result = run(args);
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('a --target whose /v1/models is HTML or {"data":"x"}', async () => {
    for (const [body, message] of [
      [
        '<html>hello</html>',
        /^load-sweep: `--target http:\/\/127\.0\.0\.1:\d+` answered GET \/v1\/models with something that is not JSON/,
      ],
      [
        '{"data":"x"}',
        /^load-sweep: `--target http:\/\/127\.0\.0\.1:\d+` answered GET \/v1\/models without a `data` list/,
      ],
    ] as const) {
      const url = await serve((_request, response) => response.end(body));
      // Asynchronous: the server answers from this process while the CLI runs.
      const child = spawn(process.execPath, [cli, '--target', url, '--steps', '5'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
      const [code] = (await once(child, 'exit')) as [number];
      expect(code, stderr).toBe(2);
      expect(stderr).toMatch(message);
      expect(stderr.trim().split('\n')).toHaveLength(1);
    }
  });
});
