import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { DEBIAN_PYTHON } from '@rig/test-support';
import { expectedCompletion, generatedTokenText, tokenize } from 'fake-vllm';

/** Open file descriptors of this process. */
export function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Text fake-vllm generates for a text prompt. */
export function expectedText(prompt: string, seed: number, maxTokens: number): string {
  return expectedCompletion(tokenize(prompt), { seed, maxTokens })
    .tokenIds.map((id) => generatedTokenText(id))
    .join('');
}

/** Token ids fake-vllm generates for token ids in. */
export function expectedTokens(prompt: number[], seed: number, maxTokens: number): number[] {
  return expectedCompletion(prompt, { seed, maxTokens }).tokenIds;
}

/** Waits until `check` is true (polling), failing after `timeoutMs`. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Watches fake-vllm's own count of received requests while `work` runs and returns the largest amount by which it
 * ran ahead of `ratePerSecond` since `startedAt` (epoch ms). A rate limit is a safety bound: the server can never
 * have received more than rate x elapsed + a burst. Elapsed time is read after the server answered, so a slow
 * machine only loosens the bound; it cannot make a correct limiter fail.
 */
export async function serverExcessOverRate<T>(
  stats: () => Promise<{ total: { requests: number } }>,
  ratePerSecond: number,
  startedAt: number,
  work: Promise<T>,
): Promise<{ result: T; maxExcess: number; received: number }> {
  const base = (await stats()).total.requests;
  let done = false;
  let maxExcess = Number.NEGATIVE_INFINITY;
  let received = 0;
  const sample = async () => {
    received = (await stats()).total.requests - base;
    const elapsedS = Math.max(0, Date.now() - startedAt) / 1000;
    maxExcess = Math.max(maxExcess, received - ratePerSecond * elapsedS);
  };
  const watcher = (async () => {
    while (!done) {
      await sample();
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  })();
  let result: T;
  try {
    result = await work;
  } finally {
    done = true;
    await watcher;
  }
  await sample();
  return { result, maxExcess, received };
}

/** A loopback port that was free a moment ago (for servers that must be told their port, like uvicorn). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * Real uvicorn (Debian's python3-uvicorn) serving `fixtures/uvicorn_stream_app.py` on a free loopback port, ready
 * when it answers. `extraArgs` go to uvicorn (e.g. `--timeout-keep-alive 1`). Kill the returned child when done.
 */
export async function startUvicorn(extraArgs: string[] = []): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    DEBIAN_PYTHON,
    [
      '-m',
      'uvicorn',
      '--app-dir',
      fileURLToPath(new URL('./fixtures', import.meta.url)),
      'uvicorn_stream_app:app',
      '--host',
      '127.0.0.1',
      '--port',
      String(port),
      '--log-level',
      'critical',
      ...extraArgs,
    ],
    { stdio: 'ignore' },
  );
  for (let polls = 0; ; polls++) {
    const up = await fetch(`${url}/attempts?id=none`).then(
      (response) => response.ok,
      () => false,
    );
    if (up) return { url, child };
    if (polls > 200) {
      child.kill('SIGKILL');
      throw new Error('uvicorn did not start');
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
