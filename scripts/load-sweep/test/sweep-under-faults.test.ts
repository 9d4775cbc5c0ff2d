import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { parseSweepArgs } from '../src/options.js';
import type { Summary } from '../src/report.js';
import { runSweep, SweepIncompleteError } from '../src/sweep.js';

/** A short run written to a fresh directory; `flags` add to or override these. */
function shortRun(name: string, flags: string[]) {
  const out = mkdtempSync(join(tmpdir(), `${name}-`));
  const defaults = ['--ramp-ms', '300', '--warmup-ms', '300', '--measure-ms', '1500', '--workers', '1'];
  const fast = ['--fake-ttft-ms', '10', '--fake-itl-ms', '5'];
  return { out, options: parseSweepArgs([...defaults, ...fast, ...flags, '--out', out]).options };
}

/** Child processes of this process whose command line contains `script`. */
function childPids(script: string): number[] {
  const lines = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(process.pid)], { encoding: 'utf8' });
  return lines
    .split('\n')
    .filter((line) => line.includes(script))
    .map((line) => Number(line.trim().split(/\s+/)[0]));
}

function readSummary(out: string): Summary {
  return JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as Summary;
}

/**
 * An engine that answers `GET /v1/models` and accepts every POST (generation) without ever answering it. `received`
 * counts the POSTs; all of them stay open until the test closes it.
 */
async function silentEngine(): Promise<{ url: string; received: () => number; server: Server }> {
  let received = 0;
  const open = new Set<ServerResponse>();
  const server = createServer((request, response) => {
    if (request.method === 'GET') {
      // /v1/models for the preflight; /metrics (the books' engine side for --target) is absent here.
      if (request.url !== '/v1/models') {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"object":"list","data":[{"id":"silent","object":"model"}]}');
      return;
    }
    received++;
    open.add(response);
    request.resume();
  });
  server.keepAliveTimeout = 0;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const close = server.close.bind(server);
  server.close = ((callback?: (error?: Error) => void) => {
    for (const response of open) response.destroy();
    server.closeAllConnections();
    return close(callback);
  }) as Server['close'];
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received: () => received,
    server,
  };
}

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
});

it('an embedded engine process SIGKILLed mid-run (the OOM killer): finished steps are written, the step says so, the sweep stops', async () => {
  const { out, options } = shortRun('sweep-engine-killed', ['--steps', '20,40,60', '--fake-processes', '2']);
  let killed: number | undefined;
  const lines: string[] = [];
  const summary = await runSweep(options, (line) => {
    lines.push(line);
    if (killed === undefined && line.startsWith('step ')) {
      // The first step is done; kill one of the two fake-vllm processes (engines 0 and 2) before the second runs.
      killed = childPids('fake-vllm/dist/child.js')[0]!;
      process.kill(killed, 'SIGKILL');
    }
  });
  expect(killed).toBeGreaterThan(0);
  const written = readSummary(out);
  expect(written.steps).toEqual(summary.steps);
  expect(written.steps.map((step) => step.concurrency)).toEqual([20, 40]);
  expect(written.steps[0]!.sent).toBeGreaterThan(0);
  expect(written.steps[0]!.invalidReason ?? '').not.toContain('went down');
  expect(written.steps[1]!.valid).toBe(false);
  expect(written.steps[1]!.invalidReason).toContain('2 of 4 embedded engines went down during the step');
  expect(written.stoppedEarly).toMatch(/went down .* at C=40; later steps would measure a smaller fleet/);
  expect(existsSync(join(out, 'report.html'))).toBe(true);
});

it('a client worker SIGKILLed mid-step: the finished step is written, the killed one "could not measure", the run rejects', async () => {
  const { out, options } = shortRun('sweep-worker-killed', ['--steps', '20,40,60']);
  let killed: number | undefined;
  const run = runSweep(
    options,
    () => {},
    (state) => {
      if (killed === undefined && state.target === 40 && state.phase === 'measure') {
        killed = childPids('worker-main.js')[0]!;
        process.kill(killed, 'SIGKILL');
      }
    },
  );
  const error = (await run.catch((caught: unknown) => caught)) as SweepIncompleteError;
  expect(error).toBeInstanceOf(SweepIncompleteError);
  const written = readSummary(out);
  expect(error.summary.steps).toEqual(written.steps);
  expect(written.steps.map((step) => step.concurrency)).toEqual([20, 40]);
  expect(written.steps[0]!.sent).toBeGreaterThan(0);
  expect(written.steps[1]!).toMatchObject({ valid: false, sent: 0 });
  // "had exited" when the kill landed before the sweep began waiting on the worker, "exited" when it landed during.
  expect(written.steps[1]!.invalidReason).toMatch(
    new RegExp(`^could not measure: client worker 0 \\(pid ${killed}\\) (had )?exited \\(signal SIGKILL\\)`),
  );
  expect(written.stoppedEarly).toMatch(/^C=40 could not measure: client worker 0/);
  expect(written.knee).not.toBe(40);
  expect(existsSync(join(out, 'report.html'))).toBe(true);
});

it('closed loop against a target that accepts and never answers: the step could not measure (not "sent 0, failed 0, valid")', async () => {
  const engine = await silentEngine();
  servers.push(engine.server);
  // Requests started in the ramp end by their 20 s deadline, long after the window (1.5 s): none starts in it.
  const { out, options } = shortRun('sweep-silent-closed', [
    '--target',
    engine.url,
    '--steps',
    '5,10',
    '--request-timeout-ms',
    '20000',
  ]);
  const error = (await runSweep(options, () => {}).catch((caught: unknown) => caught)) as SweepIncompleteError;
  expect(error).toBeInstanceOf(SweepIncompleteError);
  const written = readSummary(out);
  expect(written.steps).toHaveLength(1);
  expect(written.steps[0]!).toMatchObject({ concurrency: 5, valid: false, sent: 0 });
  expect(written.steps[0]!.invalidReason).toMatch(/^could not measure: no request started in the 1500 ms window/);
  expect(engine.received()).toBe(5); // the five slots' first requests, all still unanswered
});

it('closed loop, --mode direct and the SDK: requests to a silent target end by --request-timeout-ms and are counted as timeouts', async () => {
  const engine = await silentEngine();
  servers.push(engine.server);
  for (const mode of ['sdk', 'direct']) {
    const { options } = shortRun(`sweep-silent-${mode}`, [
      '--target',
      engine.url,
      '--mode',
      mode,
      '--endpoint',
      'completions',
      '--steps',
      '4',
      '--request-timeout-ms',
      '300',
      '--max-error-rate',
      '1',
    ]);
    const summary = await runSweep(options, () => {});
    const step = summary.steps[0]!;
    expect(step.sent, mode).toBeGreaterThan(0);
    expect(step.completed, mode).toBe(0);
    expect(step.failed, mode).toBe(step.sent);
    const kinds = Object.keys(step.errors);
    expect(kinds, mode).toEqual([mode === 'sdk' ? 'timeout_total' : 'timeout_total']);
  }
});

it('open loop against a silent target: arrivals stop when the step drains, which ends by the request deadline', async () => {
  const engine = await silentEngine();
  servers.push(engine.server);
  const { options } = shortRun('sweep-silent-open', [
    '--target',
    engine.url,
    '--arrival',
    'constant',
    '--steps',
    '10',
    '--ramp-ms',
    '0',
    '--warmup-ms',
    '0',
    '--measure-ms',
    '2000',
    // The drain lasts up to 2 s: at 10 arrivals/s, arrivals that went on during it would add ~20 requests.
    '--request-timeout-ms',
    '2000',
    '--max-error-rate',
    '1',
  ]);
  const summary = await runSweep(options, () => {});
  const step = summary.steps[0]!;
  expect(step.sent).toBeGreaterThan(10);
  expect(step.failed).toBe(step.sent);
  expect(step.errors).toEqual({ timeout_total: step.sent });
  // Every request the engine got was sent in the window, but for the first arrival (due as the rate is set, before
  // the window opens) and at most a couple more before the window's message reached the worker.
  expect(engine.received() - step.sent).toBeLessThan(5);
  expect(engine.received() - step.sent).toBeGreaterThanOrEqual(0);
});

it('SIGTERM to the CLI mid-run: it stops, writes the finished steps, leaves no process behind, and exits 1 with one line', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sweep-sigterm-'));
  const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
  const flags = ['--steps', '10,20,30', '--ramp-ms', '300', '--warmup-ms', '300', '--measure-ms', '1500'];
  const child = spawn(
    process.execPath,
    [cli, ...flags, '--fake-ttft-ms', '10', '--fake-itl-ms', '5', '--workers', '1', '--out', out],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CI: 'true' } },
  );
  let stdout = '';
  let stderr = '';
  let descendants: number[] = [];
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk;
    if (descendants.length === 0 && stdout.includes('step C=10:')) {
      // Its workers and fake-vllm processes, to check afterwards that none outlived it.
      const lines = execFileSync('ps', ['-o', 'pid=', '--ppid', String(child.pid)], { encoding: 'utf8' });
      descendants = lines.split('\n').filter(Boolean).map(Number);
      child.kill('SIGTERM');
    }
  });
  const [code] = (await once(child, 'exit')) as [number];
  expect(descendants.length).toBeGreaterThanOrEqual(3); // one worker, two fake-vllm processes
  expect(code, stderr).toBe(1);
  expect(stderr.trim().split('\n')).toEqual([
    `load-sweep: stopped, C=20 could not measure: interrupted (SIGTERM); results so far in ${out}/summary.json`,
  ]);
  const written = readSummary(out);
  expect(written.steps.map((step) => step.concurrency)).toEqual([10, 20]);
  expect(written.steps[0]!.sent).toBeGreaterThan(0);
  expect(written.steps[1]!.invalidReason).toBe('could not measure: interrupted (SIGTERM)');
  for (const pid of descendants) expect(() => process.kill(pid, 0), `pid ${pid}`).toThrow(/ESRCH/);
});
