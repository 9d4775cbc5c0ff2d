import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { skipReason } from '@rig/test-support';
import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import { Redis as IORedis, type RedisOptions } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteInferenceClient } from '../src/index.js';
import { ClusterConcurrency } from '../src/limits/cluster-concurrency.js';
import { eventually, freePort, serverExcessOverRate } from './helpers.js';

/**
 * A real redis-server on a free loopback port, no persistence. `args` are extra server options (ACL users, TLS);
 * `scheme` and `probe` say how to reach it while it starts (a TLS-only server, an ACL with the default user off).
 */
async function startRedis(
  setup: { args?: string[]; scheme?: 'redis' | 'rediss'; probe?: RedisOptions; port?: number } = {},
): Promise<{ url: string; port: number; child: ChildProcess }> {
  const { args = [], scheme = 'redis', probe: probeOptions = {} } = setup;
  for (let attempt = 0; ; attempt++) {
    // A given port: the same server back after a restart (its data gone, as after a crash).
    const port = setup.port ?? (await freePort());
    const listen = scheme === 'rediss' ? ['--port', '0', '--tls-port', String(port)] : ['--port', String(port)];
    const child = spawn(
      'redis-server',
      [...listen, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...args],
      { stdio: 'ignore' },
    );
    const url = `${scheme}://127.0.0.1:${port}`;
    const probe = new IORedis(url, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      ...probeOptions,
    });
    probe.on('error', () => {}); // refused until the server is up: expected while polling
    for (let tries = 0; tries < 50; tries++) {
      try {
        await probe.connect();
        await probe.ping();
        probe.disconnect();
        return { url, port, child };
      } catch {
        probe.disconnect();
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    probe.disconnect();
    child.kill('SIGKILL');
    if (attempt >= 2) throw new Error('redis-server did not start');
  }
}

/** What a CONTROLLED concurrency worker last reported (test/fixtures/concurrency-worker.mjs). */
interface WorkerReport {
  completed: number;
  inFlight: number;
  maxInFlight: number;
  /** 'mark' messages seen: a report with fewer predates the last mark. */
  marks: number;
  errors: Record<string, number>;
}

/**
 * Trainer processes sharing one cluster budget, driven over IPC. `until()` waits on the workers' own reports and is
 * bounded by a count of completions, never by a clock: a scheme that never gets there fails on the bound.
 */
class Fleet {
  readonly children: ChildProcess[];
  readonly reports: WorkerReport[];
  private readonly marksSent: number[];
  private waiters = new Set<() => void>();

  constructor(worker: string, count: number, env: NodeJS.ProcessEnv) {
    this.reports = Array.from({ length: count }, () => ({
      completed: 0,
      inFlight: 0,
      maxInFlight: 0,
      marks: 0,
      errors: {},
    }));
    this.marksSent = Array.from({ length: count }, () => 0);
    this.children = Array.from({ length: count }, (_, index) => {
      const child = fork(worker, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env });
      child.on('message', (report: WorkerReport) => {
        this.reports[index] = report;
        for (const waiter of this.waiters) waiter();
      });
      return child;
    });
  }

  completed(indexes: readonly number[]): number {
    return indexes.reduce((sum, index) => sum + this.reports[index]!.completed, 0);
  }

  send(indexes: readonly number[], message: 'idle' | 'busy' | 'mark' | 'stop' | 'freeze'): void {
    for (const index of indexes) {
      if (message === 'mark') this.marksSent[index]!++;
      this.children[index]!.send(message);
    }
  }

  /** Whether worker `index` has reported since it saw the last 'mark'. */
  marked(index: number): boolean {
    return this.reports[index]!.marks === this.marksSent[index];
  }

  /** The most worker `index` had in flight at once since the last 'mark' (0 until it has seen that mark). */
  maxInFlight(index: number): number {
    const report = this.reports[index]!;
    return report.marks === this.marksSent[index] ? report.maxInFlight : 0;
  }

  /** Resolves true once `done()` holds, false if `bound()` holds first. */
  until(done: () => boolean, bound: () => boolean): Promise<boolean> {
    return new Promise((resolve) => {
      const check = () => {
        const outcome = done() ? true : bound() ? false : undefined;
        if (outcome === undefined) return;
        this.waiters.delete(check);
        resolve(outcome);
      };
      this.waiters.add(check);
      check();
    });
  }

  async stop(indexes: readonly number[]): Promise<void> {
    const exits = indexes.map((index) => once(this.children[index]!, 'exit'));
    this.send(indexes, 'stop');
    await Promise.all(exits);
  }

  kill(): void {
    for (const child of this.children) child.kill('SIGKILL');
  }
}

const skipped = skipReason('remote-inference-client cluster-limits.test.ts', ['redis-server']);
const opensslSkipped = skipReason('remote-inference-client cluster-limits.test.ts (the rediss:// test)', ['openssl']);

/** A throwaway CA and a server certificate for `name` signed by it (openssl), in a temporary directory. */
function makeTestPki(name: string): { dir: string; ca: string; caFile: string; certFile: string; keyFile: string } {
  const dir = mkdtempSync(join(tmpdir(), 'ric-pki-'));
  const path = (file: string) => join(dir, file);
  const openssl = (...args: string[]) => {
    const result = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`openssl ${args[0]} failed: ${result.stderr}`);
  };
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(
    'req',
    '-x509',
    ...key,
    '-keyout',
    path('ca.key'),
    '-out',
    path('ca.crt'),
    '-days',
    '1',
    '-subj',
    '/CN=ric test CA',
  );
  openssl('req', ...key, '-keyout', path('server.key'), '-out', path('server.csr'), '-subj', `/CN=${name}`);
  writeFileSync(path('san.ext'), `subjectAltName=DNS:${name}\n`);
  openssl(
    'x509',
    '-req',
    '-in',
    path('server.csr'),
    '-CA',
    path('ca.crt'),
    '-CAkey',
    path('ca.key'),
    '-CAcreateserial',
    '-out',
    path('server.crt'),
    '-days',
    '1',
    '-extfile',
    path('san.ext'),
  );
  return {
    dir,
    ca: readFileSync(path('ca.crt'), 'utf8'),
    caFile: path('ca.crt'),
    certFile: path('server.crt'),
    keyFile: path('server.key'),
  };
}

describe.skipIf(skipped !== undefined)('cluster-wide limits on a real redis-server', () => {
  let fake: FakeVllm;
  beforeAll(async () => {
    fake = await startFakeVllm({ engines: 2, processes: 1, ttftMs: 1, itlMs: 1, jitter: 0 });
  });
  afterAll(() => fake.close());

  it('4 processes sharing a budget of R never run ahead of R together, by the server count', async () => {
    const redis = await startRedis();
    try {
      const rate = 400;
      const durationMs = 4000;
      const startAt = Date.now() + 1500;
      const worker = fileURLToPath(new URL('./fixtures/qps-worker.mjs', import.meta.url));
      const workers = Promise.all(
        Array.from({ length: 4 }, async () => {
          const child = fork(worker, [], {
            stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
            env: {
              ...process.env,
              ENGINES: fake.engines.map((engine) => engine.url).join(','),
              REDIS_URL: redis.url,
              LIMIT_ID: 'shared-test',
              RATE: String(rate),
              START_AT: String(startAt),
              DURATION_MS: String(durationMs),
            },
          });
          const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
          return JSON.parse(line) as { completed: number; admittedInWindow: number; errors: Record<string, number> };
        }),
      );
      // The bound is on what fake-vllm received (its own count), sampled while the workers run: never more than
      // the shared budget x elapsed time + one 50 ms lease per process. Four unshared budgets would run ~4x ahead.
      // How close the processes come to the budget is a throughput figure: bench/limits-bench.mjs prints it.
      const {
        result: outputs,
        maxExcess,
        received,
      } = await serverExcessOverRate(() => fake.control.stats(), rate, startAt, workers);
      const completed = outputs.reduce((sum, output) => sum + output.completed, 0);
      console.log(
        `cluster QPS: 4 processes, budget ${rate}/s for ${durationMs} ms: fake-vllm received ${received}, at most ${maxExcess.toFixed(0)} ahead of the budget; per process ${outputs.map((output) => output.completed).join(', ')}`,
      );
      expect(outputs.every((output) => Object.keys(output.errors).length === 0)).toBe(true);
      expect(outputs.every((output) => output.completed > 0)).toBe(true);
      expect(received).toBe(completed);
      expect(maxExcess).toBeLessThanOrEqual(4 * rate * 0.05 + 10);
    } finally {
      redis.child.kill('SIGKILL');
    }
  });

  it('the Redis URL is read whole: the database in its path holds the limiter state, db 0 stays empty', async () => {
    const redis = await startRedis();
    const client = new RemoteInferenceClient({
      engines: fake.engines.map((engine) => engine.url),
      limits: {
        maxQps: 500,
        maxConcurrency: 8,
        redis: { url: `${redis.url}/5`, id: 'db-test', onUnavailable: 'fail-closed' },
      },
      transport: { shared: false },
    });
    const probe = new IORedis(redis.url, { lazyConnect: true });
    try {
      await Promise.all(
        Array.from({ length: 20 }, (_, index) =>
          client.generate({ token_ids: [index + 1], sampling_params: { max_tokens: 1 } }),
        ),
      );
      await probe.connect();
      expect(await probe.keys('*')).toEqual([]);
      await probe.select(5);
      const keys = await probe.keys('*');
      expect(keys.some((key) => key.includes('remote-inference-client:db-test'))).toBe(true);
    } finally {
      probe.disconnect();
      await client.close();
      redis.child.kill('SIGKILL');
    }
  });

  it('an ACL user and password in the URL reach Redis, and so do its query options and limits.redis.options', async () => {
    // The default user is off: only alice's credentials open a connection.
    const redis = await startRedis({
      args: ['--user', 'default', 'off', '--user', 'alice', 'on', '>s3cret', '~*', '&*', '+@all'],
      probe: { username: 'alice', password: 's3cret' },
    });
    const engines = fake.engines.map((engine) => engine.url);
    const limited = (redisLimits: { url: string; options?: RedisOptions }) =>
      new RemoteInferenceClient({
        engines,
        limits: {
          maxQps: 500,
          maxConcurrency: 8,
          redis: { ...redisLimits, id: 'acl-test', onUnavailable: 'fail-closed', timeoutMs: 2000 },
        },
        transport: { shared: false },
      });
    const fromUrl = limited({ url: `redis://alice:s3cret@127.0.0.1:${redis.port}/4?connectionName=ric-from-url` });
    const fromOptions = limited({
      url: `redis://127.0.0.1:${redis.port}/4`,
      options: { username: 'alice', password: 's3cret', connectionName: 'ric-from-options' },
    });
    const wrong = limited({ url: `redis://alice:wrong@127.0.0.1:${redis.port}/4` });
    const probe = new IORedis(redis.url, { lazyConnect: true, username: 'alice', password: 's3cret' });
    const run = (client: RemoteInferenceClient) =>
      Promise.all(
        Array.from({ length: 20 }, (_, index) =>
          client.generate({ token_ids: [index + 1], sampling_params: { max_tokens: 1 } }).then(
            () => 'ok',
            (error: { code?: string }) => error.code,
          ),
        ),
      );
    try {
      expect(await run(fromUrl)).toEqual(Array(20).fill('ok'));
      expect(await run(fromOptions)).toEqual(Array(20).fill('ok'));
      // Refused credentials are a typed limiter error (fail-closed), not a hang and not a success.
      expect(new Set(await run(wrong))).toEqual(new Set(['ERR_LIMITER_UNAVAILABLE']));
      await probe.connect();
      const connections = ((await probe.client('LIST')) as string).split('\n');
      for (const name of ['ric-from-url', 'ric-from-options']) {
        const mine = connections.filter((line) => line.includes(` name=${name} `));
        expect(mine.length, `connections named ${name}`).toBeGreaterThan(0);
        expect(mine.every((line) => line.includes(' user=alice ') && line.includes(' db=4 '))).toBe(true);
      }
      await probe.select(4);
      expect((await probe.keys('*')).some((key) => key.includes('remote-inference-client:acl-test'))).toBe(true);
    } finally {
      probe.disconnect();
      await Promise.all([fromUrl.close(), fromOptions.close(), wrong.close()]);
      redis.child.kill('SIGKILL');
    }
  });

  it.skipIf(opensslSkipped !== undefined)(
    'rediss:// with limits.redis.options.tls (a private CA and servername) reaches a TLS-only redis-server; without the servername it fails closed, typed',
    async () => {
      const pki = makeTestPki('redis.test');
      const redis = await startRedis({
        scheme: 'rediss',
        args: [
          '--tls-cert-file',
          pki.certFile,
          '--tls-key-file',
          pki.keyFile,
          '--tls-ca-cert-file',
          pki.caFile,
          '--tls-auth-clients',
          'no',
        ],
        probe: { tls: { ca: pki.ca, servername: 'redis.test' } },
      });
      const limited = (tls: NonNullable<RedisOptions['tls']>) =>
        new RemoteInferenceClient({
          engines: fake.engines.map((engine) => engine.url),
          limits: {
            maxConcurrency: 8,
            redis: { url: redis.url, id: 'tls-test', onUnavailable: 'fail-closed', timeoutMs: 2000, options: { tls } },
          },
          transport: { shared: false },
        });
      const trusted = limited({ ca: pki.ca, servername: 'redis.test' });
      // The certificate names redis.test, not 127.0.0.1: without the servername, verification must fail.
      const mismatched = limited({ ca: pki.ca });
      const run = (client: RemoteInferenceClient) =>
        Promise.all(
          Array.from({ length: 10 }, (_, index) =>
            client.generate({ token_ids: [index + 1], sampling_params: { max_tokens: 1 } }).then(
              () => 'ok',
              (error: { code?: string }) => error.code,
            ),
          ),
        );
      try {
        expect(await run(trusted)).toEqual(Array(10).fill('ok'));
        expect(new Set(await run(mismatched))).toEqual(new Set(['ERR_LIMITER_UNAVAILABLE']));
      } finally {
        await Promise.all([trusted.close(), mismatched.close()]);
        redis.child.kill('SIGKILL');
        rmSync(pki.dir, { recursive: true, force: true });
      }
    },
  );

  it('Redis killed mid-run: fail-closed rejects with a typed error, fail-open carries on locally', async () => {
    const redis = await startRedis();
    const engines = fake.engines.map((engine) => engine.url);
    const closed = new RemoteInferenceClient({
      engines,
      limits: { maxQps: 1000, redis: { url: redis.url, id: 'kill-closed', onUnavailable: 'fail-closed' } },
      transport: { shared: false },
    });
    const open = new RemoteInferenceClient({
      engines,
      limits: { maxQps: 1000, redis: { url: redis.url, id: 'kill-open', onUnavailable: 'fail-open' } },
      transport: { shared: false },
    });
    try {
      const one = (client: RemoteInferenceClient) =>
        client.generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }, { timeoutMs: 5000 });
      await Promise.all([one(closed), one(open)]);
      redis.child.kill('SIGKILL');
      await once(redis.child, 'exit');
      // A lease in hand (50 permits at 1000/s) is spent first; after it, every request fails fast with a typed error.
      const outcomes = await Promise.all(
        Array.from({ length: 300 }, () =>
          one(closed).then(
            () => 'ok',
            (error: { code: string }) => error.code,
          ),
        ),
      );
      expect(outcomes.filter((outcome) => outcome === 'ERR_LIMITER_UNAVAILABLE').length).toBeGreaterThan(200);
      expect(outcomes.filter((outcome) => outcome !== 'ok' && outcome !== 'ERR_LIMITER_UNAVAILABLE')).toEqual([]);
      const carried = await Promise.all(
        Array.from({ length: 300 }, () =>
          one(open).then(
            () => 'ok',
            (error: { code: string }) => error.code,
          ),
        ),
      );
      expect(carried.filter((outcome) => outcome !== 'ok')).toEqual([]);
      // Redis back (empty, as after a crash): fail-closed ends. Before, it never did: the scheduler refused before
      // asking for a permit, so no lease ever tried Redis again, and Bottleneck never re-wrote its settings key.
      const back = await startRedis({ port: redis.port });
      redis.child = back.child;
      await eventually(
        () =>
          one(closed).then(
            () => true,
            () => false,
          ),
        15_000,
      );
      expect(await Promise.all(Array.from({ length: 20 }, () => one(closed).then(() => 'ok')))).toEqual(
        Array(20).fill('ok'),
      );
    } finally {
      await closed.close();
      await open.close();
      redis.child.kill('SIGKILL');
    }
  });

  // The budget's own Redis traffic, driven directly: which answer is learned when, what happens in an outage.
  describe('the shared concurrency budget through outages and batched answers', () => {
    const usageOf =
      (inFlight: number, queued = 0) =>
      () => ({ inFlight, queued });

    it('a release answered in the same Redis reply as an earlier call is not counted twice (the cluster stays within its budget)', async () => {
      const redis = await startRedis();
      const options = { url: redis.url, id: 'batched-answers' };
      const a = new ClusterConcurrency(40, options);
      const b = new ClusterConcurrency(40, options);
      try {
        let usage = { inFlight: 30, queued: 10 };
        a.usage = () => usage;
        // a's scheduler: admits while in flight < limit.
        a.onAvailable = () => {
          const admit = Math.max(0, Math.min(usage.queued, a.limit - usage.inFlight));
          usage = { inFlight: usage.inFlight + admit, queued: usage.queued - admit };
        };
        b.usage = usageOf(0);
        a.want(40);
        await eventually(() => a.held === 40);
        usage = { inFlight: 22, queued: 0 }; // 18 of a's requests ended, nothing queued
        redis.child.kill('SIGSTOP'); // Redis busy: the next calls wait in its input buffer and answer together
        (a as unknown as { rebalance(): void }).rebalance(); // the heartbeat
        a.settle(22, 0); // idle surplus: gives back 16
        await new Promise((resolve) => setImmediate(resolve));
        b.usage = usageOf(0, 40);
        b.want(40); // behind a's two calls
        usage = { inFlight: 22, queued: 10 }; // new requests queue in a
        redis.child.kill('SIGCONT');
        await eventually(() => b.held > 0);
        // Before: a learned the heartbeat's answer with the release already confirmed, held 40, admitted 10 more
        // (32 in flight) while b was granted 16: 48 running against 40.
        expect(usage.inFlight + b.held).toBeLessThanOrEqual(40);
        expect(a.held).toBeLessThanOrEqual(24);
      } finally {
        redis.child.kill('SIGCONT');
        await a.close();
        await b.close();
        redis.child.kill('SIGKILL');
      }
    });

    it('fail-open ends when Redis is back: the process re-registers what it runs and yields the rest', async () => {
      const redis = await startRedis();
      const options = { url: redis.url, id: 'rejoin', onUnavailable: 'fail-open' as const, timeoutMs: 500 };
      const a = new ClusterConcurrency(40, options);
      let b: ClusterConcurrency | undefined;
      try {
        a.usage = usageOf(30);
        a.want(30);
        await eventually(() => a.held === 30);
        redis.child.kill('SIGKILL');
        await once(redis.child, 'exit');
        await eventually(() => a.limit === 40); // alone on the whole budget during the outage
        redis.child = (await startRedis({ port: redis.port })).child;
        // Before, it stayed at 40 for good: two processes sharing 40 ran 80 after a Redis restart.
        await eventually(() => a.limit === 30, 10_000);
        const other = new ClusterConcurrency(40, options);
        b = other;
        other.usage = usageOf(0, 40);
        other.want(40);
        await eventually(() => other.held > 0);
        expect(other.held).toBeLessThanOrEqual(10);
      } finally {
        await a.close();
        await b?.close();
        redis.child.kill('SIGKILL');
      }
    });

    it('a Redis that stops answering is an outage (fail-open here), and close() does not wait for it', async () => {
      const redis = await startRedis();
      const a = new ClusterConcurrency(40, { url: redis.url, id: 'silent', timeoutMs: 300 });
      try {
        a.usage = usageOf(10);
        a.want(10);
        await eventually(() => a.held === 10);
        redis.child.kill('SIGSTOP');
        a.usage = usageOf(10, 20);
        a.want(30); // never answered
        // Before: no command timeout, so the ask hung; 3 s later the unconfirmed lease held the limit at 0 and
        // every request waited for its deadline, fail-open or not.
        await eventually(() => a.limit === 40);
        // And close() used to wait for the silent Redis for good.
        await a.close();
      } finally {
        redis.child.kill('SIGCONT');
        redis.child.kill('SIGKILL');
      }
    });
  });

  it("4 processes sharing maxConcurrency through Redis never exceed it together, per fake-vllm; a killed holder's slots come back", async () => {
    const redis = await startRedis();
    // In-process engines: fake-vllm's max-concurrent figure is exact across them.
    const local = await startFakeVllm({ engines: 2, ttftMs: 2, itlMs: 2, jitter: 0, control: false });
    try {
      const engines = local.engines.map((engine) => engine.url).join(',');
      const worker = fileURLToPath(new URL('./fixtures/concurrency-worker.mjs', import.meta.url));
      const env = {
        ...process.env,
        ENGINES: engines,
        REDIS_URL: redis.url,
        LIMIT_ID: 'shared-concurrency',
        MAX_CONCURRENCY: '40',
      };
      await local.control.resetHighWaterMarks();
      const outputs = await Promise.all(
        Array.from({ length: 4 }, async () => {
          const child = fork(worker, [], {
            stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
            env: { ...env, CALLERS: '30', DURATION_MS: '3000' },
          });
          const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
          return JSON.parse(line) as { completed: number; errors: Record<string, number>; maxInFlight: number };
        }),
      );
      const stats = await local.control.stats();
      console.log(
        `cluster concurrency: budget 40 over 4 processes x 30 callers: server max concurrent ${stats.total.maxConcurrent}; per process max ${outputs.map((output) => output.maxInFlight).join(', ')}; completed ${outputs.map((output) => output.completed).join(', ')}`,
      );
      expect(outputs.every((output) => Object.keys(output.errors).length === 0 && output.completed > 0)).toBe(true);
      expect(stats.total.maxConcurrentExact).toBe(true);
      expect(stats.total.maxConcurrent).toBeLessThanOrEqual(40);
      expect(stats.total.maxConcurrent).toBeGreaterThanOrEqual(30);

      // A process holding the whole budget is killed: after its heartbeat expires, another process gets the slots.
      const holder = fork(worker, [], {
        stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
        env: { ...env, CALLERS: '40', HOLD: '1' },
      });
      const lines = createInterface({ input: holder.stdout! });
      for await (const line of lines) if ((JSON.parse(line) as { inFlight: number }).inFlight === 40) break;
      holder.kill('SIGKILL');
      const next = fork(worker, [], {
        stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
        env: { ...env, CALLERS: '10', DURATION_MS: '5000' },
      });
      const [line] = (await once(createInterface({ input: next.stdout! }), 'line')) as [string];
      const after = JSON.parse(line) as { completed: number; errors: Record<string, number> };
      expect(after.errors).toEqual({});
      expect(after.completed).toBeGreaterThan(0);
    } finally {
      await local.close();
      redis.child.kill('SIGKILL');
    }
  });

  // Regression: a holder stalled past the heartbeat TTL (SIGSTOP here; a long GC pause or a frozen VM in production)
  // is evicted and its slots go to another process. It used to wake up still believing it held the whole budget and
  // admit on it, while its later releases deleted its Redis entry: both processes held 40 of a 40 budget.
  it('a holder stalled past the heartbeat TTL does not take its evicted slots back: fake-vllm never sees more than the budget', async () => {
    const redis = await startRedis();
    // In-process engines: fake-vllm's max-concurrent figure is exact across them.
    const local = await startFakeVllm({ engines: 2, ttftMs: 2, itlMs: 2, jitter: 0, control: false });
    const budget = 40;
    const env = {
      ...process.env,
      ENGINES: local.engines.map((engine) => engine.url).join(','),
      REDIS_URL: redis.url,
      LIMIT_ID: 'stalled-holder',
      MAX_CONCURRENCY: String(budget),
      CALLERS: String(budget),
      CONTROLLED: '1',
    };
    const worker = fileURLToPath(new URL('./fixtures/concurrency-worker.mjs', import.meta.url));
    const holder = new Fleet(worker, 1, env);
    let other: Fleet | undefined;
    try {
      await local.control.resetHighWaterMarks();
      // The holder alone takes the whole budget (bounded by a count of its completions, never by a clock), then
      // runs at it until its 40 connections are warm: a request admitted just before the stall whose connect was
      // still pending would only reach the engine after it, whatever the budget says (a lease cannot fence that).
      holder.send([0], 'mark');
      const warmed = holder.completed([0]);
      const full = await holder.until(
        () => holder.maxInFlight(0) >= budget,
        () => holder.completed([0]) - warmed >= 20_000,
      );
      expect(full, `the holder's max in flight ${holder.maxInFlight(0)}`).toBe(true);
      const atFull = holder.completed([0]);
      await holder.until(
        () => holder.completed([0]) - atFull >= 2000,
        () => false,
      );
      // It stops itself between two tasks, every admitted request on the wire: they finish on the engines within
      // milliseconds, their answers wait in its sockets. Its heartbeat (3 s) expires while it is stopped.
      holder.send([0], 'freeze');
      other = new Fleet(worker, 1, env);
      const second = other;
      // The other process gets the whole budget only once Redis has evicted the stalled holder.
      await second.until(
        () => second.maxInFlight(0) >= budget,
        () => false,
      );
      const before = holder.completed([0]);
      holder.children[0]!.kill('SIGCONT');
      // Both run on: the holder must get slots again (it is granted its share back), the other must keep going.
      holder.send([0], 'mark');
      const baseOther = second.completed([0]);
      const resumed = await holder.until(
        () => holder.completed([0]) - before >= 3000 && holder.maxInFlight(0) >= 1,
        () => second.completed([0]) - baseOther >= 60_000,
      );
      const stats = await local.control.stats();
      console.log(
        `stalled holder: after SIGCONT it completed ${holder.completed([0]) - before} (max in flight ${holder.maxInFlight(0)}), the other ${second.completed([0]) - baseOther}; fake-vllm max concurrent ${stats.total.maxConcurrent} (budget ${budget})`,
      );
      expect(resumed, 'the stalled holder got slots again').toBe(true);
      await Promise.all([holder.stop([0]), second.stop([0])]);
      expect([holder.reports[0]!.errors, second.reports[0]!.errors]).toEqual([{}, {}]);
      expect(stats.total.maxConcurrentExact).toBe(true);
      expect(stats.total.maxConcurrent).toBeLessThanOrEqual(budget);
    } finally {
      holder.children[0]!.kill('SIGCONT');
      holder.kill();
      other?.kill();
      await local.close();
      redis.child.kill('SIGKILL');
    }
  }, 120_000);

  // The other half of the rule: when the stalled holder's requests are still running on the engines as it wakes up
  // (long generations), it re-registers them, so Redis counts what really runs; the total is then above the budget
  // and the other process yields everything until the excess is gone. Before, the other process kept all 40 slots
  // for as long as the holder's requests ran: twice the budget on the engines.
  it('a stalled holder whose requests still run re-registers them when it wakes: the other process yields until they end', async () => {
    const redis = await startRedis();
    const local = await startFakeVllm({ engines: 2, ttftMs: 2, itlMs: 2, jitter: 0, control: false });
    const budget = 40;
    const env = {
      ...process.env,
      ENGINES: local.engines.map((engine) => engine.url).join(','),
      REDIS_URL: redis.url,
      LIMIT_ID: 'stalled-long-holder',
      MAX_CONCURRENCY: String(budget),
      CALLERS: String(budget),
    };
    const worker = fileURLToPath(new URL('./fixtures/concurrency-worker.mjs', import.meta.url));
    // 40 generations of 30,000 tokens (a minute each): they outlive everything below.
    const holder = fork(worker, [], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'], env: { ...env, HOLD: '1' } });
    let other: Fleet | undefined;
    try {
      const lines = createInterface({ input: holder.stdout! });
      for await (const line of lines) if ((JSON.parse(line) as { inFlight: number }).inFlight === budget) break;
      holder.kill('SIGSTOP');
      other = new Fleet(worker, 1, { ...env, CONTROLLED: '1' });
      const second = other;
      // Evicted after its heartbeat TTL: the other process takes the budget while the holder's 40 still run.
      await second.until(
        () => second.maxInFlight(0) >= budget,
        () => false,
      );
      holder.kill('SIGCONT');
      const afterWake = second.completed([0]);
      // Re-registered, the holder's running requests fill the budget: the other gives back every slot it frees.
      const yielded = await second.until(
        () => second.reports[0]!.inFlight === 0,
        () => second.completed([0]) - afterWake >= 20_000,
      );
      expect(yielded, `the other process still had ${second.reports[0]!.inFlight} in flight`).toBe(true);
      // And admits nothing while they run: 25 more reports after the mark (one per 20 ms), nothing in flight.
      second.send([0], 'mark');
      let reports = 0;
      await second.until(
        () => second.marked(0) && ++reports > 25,
        () => false,
      );
      expect(second.maxInFlight(0)).toBe(0);
      // The holder dies with its requests: once its heartbeat expires, its slots come back to the other process.
      holder.kill('SIGKILL');
      second.send([0], 'mark');
      await second.until(
        () => second.maxInFlight(0) >= budget,
        () => false,
      );
      await second.stop([0]);
      expect(second.reports[0]!.errors).toEqual({});
    } finally {
      holder.kill('SIGKILL');
      other?.kill();
      await local.close();
      redis.child.kill('SIGKILL');
    }
  }, 120_000);

  it('4 processes with equal demand share the budget fairly; an idle share flows to the busy, comes back, and a killed holder returns it', async () => {
    const redis = await startRedis();
    // In-process engines: fake-vllm's max-concurrent figure is exact across them.
    const local = await startFakeVllm({ engines: 2, ttftMs: 5, itlMs: 5, jitter: 0, control: false });
    const budget = 40;
    const all = [0, 1, 2, 3];
    const busy = [1, 2, 3];
    const fleet = new Fleet(fileURLToPath(new URL('./fixtures/concurrency-worker.mjs', import.meta.url)), 4, {
      ...process.env,
      ENGINES: local.engines.map((engine) => engine.url).join(','),
      REDIS_URL: redis.url,
      LIMIT_ID: 'fair-concurrency',
      MAX_CONCURRENCY: String(budget),
      CALLERS: '30',
      CONTROLLED: '1',
    });
    const since = (indexes: readonly number[]) => {
      const base = fleet.completed(indexes);
      return () => fleet.completed(indexes) - base;
    };
    const shares = (indexes: readonly number[], count: number) => {
      const base = indexes.map((index) => fleet.reports[index]!.completed);
      const total = since(indexes);
      return fleet
        .until(
          () => total() >= count,
          () => false,
        )
        .then(() => indexes.map((index, position) => fleet.reports[index]!.completed - base[position]!));
    };
    const withinOfMean = (counts: number[], tolerance: number) => {
      const mean = counts.reduce((sum, count) => sum + count, 0) / counts.length;
      return counts.every((count) => Math.abs(count - mean) <= tolerance * mean);
    };
    try {
      await local.control.resetHighWaterMarks();
      // Warm-up, bounded by a count: processes start one after another and the first one alone may take it all.
      fleet.send(all, 'mark');
      const warmed = since(all);
      await fleet.until(
        () => all.every((index) => fleet.maxInFlight(index) >= 8),
        () => warmed() >= 4000,
      );

      // 1. Equal demand: each process's completions within ±10% of the mean over 6,000 completions (the issue's
      // target; bench/cluster-fairness.mjs measures it over 10 s). Five runs in a row on the 2-core machine, loaded by
      // other work, stayed within 2.3% (1,535 / 1,469 / 1,509 / 1,490 the widest); the bound was ±25% before.
      // Counted in completions, never timed.
      const equal = await shares(all, 6000);
      console.log(`fair share, 4 processes x 30 callers, budget ${budget}: completions ${equal.join(', ')}`);
      expect.soft(withinOfMean(equal, 0.1), `completions per process ${equal.join(', ')}`).toBe(true);

      // 2. Process 0 stops demanding: the 3 busy ones each rise above a quarter of the budget (40 / 3 = 13.3).
      fleet.send([0], 'idle');
      fleet.send(busy, 'mark');
      const afterIdle = since(busy);
      const rose = await fleet.until(
        () => busy.every((index) => fleet.maxInFlight(index) >= 13) && fleet.reports[0]!.inFlight === 0,
        () => afterIdle() >= 8000,
      );
      const idleMax = busy.map((index) => fleet.maxInFlight(index));
      console.log(`process 0 idle: max in flight of the others ${idleMax.join(', ')} (completions ${afterIdle()})`);
      expect.soft(rose, `max in flight of the busy processes ${idleMax.join(', ')}`).toBe(true);

      // 3. Process 0 demands again: it gets its full quarter back from the others.
      fleet.send([0], 'mark');
      fleet.send([0], 'busy');
      const afterBusy = since(all);
      const back = await fleet.until(
        () => fleet.maxInFlight(0) >= budget / 4,
        () => afterBusy() >= 8000,
      );
      console.log(`process 0 busy again: its max in flight ${fleet.maxInFlight(0)} (completions ${afterBusy()})`);
      expect.soft(back, `max in flight of process 0 after it came back: ${fleet.maxInFlight(0)}`).toBe(true);
      const again = await shares(all, 6000);
      console.log(`fair share after the return: completions ${again.join(', ')}`);
      expect.soft(withinOfMean(again, 0.1), `completions per process ${again.join(', ')}`).toBe(true);

      // 4. Process 0 is SIGKILLed holding its slots: once its heartbeat expires they go to the other three.
      fleet.children[0]!.kill('SIGKILL');
      await once(fleet.children[0]!, 'exit');
      fleet.send(busy, 'mark');
      const afterKill = since(busy);
      const returned = await fleet.until(
        () => busy.every((index) => fleet.maxInFlight(index) >= 13),
        () => afterKill() >= 20_000,
      );
      const killMax = busy.map((index) => fleet.maxInFlight(index));
      console.log(`process 0 killed: max in flight of the others ${killMax.join(', ')} (completions ${afterKill()})`);
      expect.soft(returned, `max in flight of the survivors ${killMax.join(', ')}`).toBe(true);

      await fleet.stop(busy);
      const stats = await local.control.stats();
      console.log(`fair share: server max concurrent ${stats.total.maxConcurrent} (budget ${budget})`);
      expect(busy.map((index) => fleet.reports[index]!.errors)).toEqual([{}, {}, {}]);
      expect(stats.total.maxConcurrentExact).toBe(true);
      expect(stats.total.maxConcurrent).toBeLessThanOrEqual(budget);
    } finally {
      fleet.kill();
      await local.close();
      redis.child.kill('SIGKILL');
    }
  }, 180_000);
});
