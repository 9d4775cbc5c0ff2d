import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Client } from 'undici';
import { describe, expect, it } from 'vitest';
import * as errors from '../src/errors.js';
import { isRetryable } from '../src/index.js';

describe('errors: one source of retryability, decided in the constructor', () => {
  it('HttpStatusError: 429, 503 and a router plain-text 5xx are retryable; a JSON 5xx (the engine worked) is not', () => {
    expect(new errors.HttpStatusError(429, '{}').retryable).toBe(true);
    expect(new errors.HttpStatusError(503, '{"error":{}}').retryable).toBe(true);
    expect(new errors.HttpStatusError(500, 'Internal Server Error').retryable).toBe(true);
    expect(new errors.HttpStatusError(502, '<html>Bad Gateway</html>').retryable).toBe(true);
    expect(new errors.HttpStatusError(500, '{"error":{"message":"boom"}}').retryable).toBe(false);
    expect(new errors.HttpStatusError(400, 'bad').retryable).toBe(false);
  });

  it('ConnectionError is retryable exactly for known connection failures', () => {
    expect(new errors.ConnectionError('reset', 'ECONNRESET').retryable).toBe(true);
    expect(new errors.ConnectionError('closed', 'UND_ERR_SOCKET').retryable).toBe(true);
    expect(new errors.ConnectionError('???', 'UND_ERR_SOMETHING_NEW').retryable).toBe(false);
    expect(new errors.ConnectionError('???', undefined).retryable).toBe(false);
  });

  it('the retry policy reads the same field for every error', () => {
    const all = [
      new errors.HttpStatusError(500, 'Internal Server Error'),
      new errors.HttpStatusError(500, '{}'),
      new errors.ConnectionError('x', 'ECONNREFUSED'),
      new errors.TimeoutError('connect', 1),
      new errors.TimeoutError('ttfb', 1),
      new errors.StreamInterruptedError('cut'),
      new errors.EngineUnavailableError('none'),
    ];
    for (const error of all) expect(isRetryable(error)).toBe(error.retryable);
  });
});

describe('errors: undici codes are mapped in one place', () => {
  it("undici's UND_ERR_INVALID_ARG is the caller's mistake (InvalidOptionsError), never a connection failure", () => {
    // A real undici error: `new Client` checks its options only when a pool opens a connection.
    let refused: unknown;
    try {
      new Client('http://127.0.0.1:1', { keepAliveTimeoutThreshold: Number.NaN });
    } catch (caught) {
      refused = caught;
    }
    expect((refused as { code?: string }).code).toBe('UND_ERR_INVALID_ARG');
    const mapped = errors.mapTransportError(refused, { engine: 'http://127.0.0.1:1', afterResponseBytes: false });
    expect(mapped).toBeInstanceOf(errors.InvalidOptionsError);
    expect(mapped.code).toBe('ERR_INVALID_OPTIONS');
    expect(mapped.retryable).toBe(false);
    expect(mapped.cause).toBe(refused);
  });
});

describe('errors: every class is branded across two copies of the package', () => {
  it('instanceof works between copies for each class, and only for the right class', async () => {
    // A real second copy: the built package copied elsewhere and imported from there.
    const dist = fileURLToPath(new URL('../dist', import.meta.url));
    const copy = mkdtempSync(join(tmpdir(), 'ric-copy-'));
    cpSync(dist, copy, { recursive: true });
    const other = (await import(pathToFileURL(join(copy, 'errors.js')).href)) as typeof errors;
    expect(other.TimeoutError).not.toBe(errors.TimeoutError);
    const theirs = new other.TimeoutError('ttfb', 5);
    expect(theirs instanceof errors.TimeoutError).toBe(true);
    expect(theirs instanceof errors.InferenceError).toBe(true);
    expect(theirs instanceof Error).toBe(true);
    expect(theirs instanceof errors.AbortError).toBe(false);
    expect(errors.isInferenceError(theirs)).toBe(true);
    const classes = [
      'InvalidOptionsError',
      'ConnectionError',
      'AbortError',
      'StreamInterruptedError',
      'StreamParseError',
      'ServerStreamError',
      'EngineUnavailableError',
    ] as const;
    const ours = new Map<string, unknown>(Object.entries(errors));
    const theirsByName = new Map<string, unknown>(Object.entries(other));
    for (const name of classes) {
      const Theirs = theirsByName.get(name) as new (message: string, code?: string) => Error;
      const instance = new Theirs('x', 'ECONNRESET');
      for (const against of classes) {
        expect(instance instanceof (ours.get(against) as new () => Error)).toBe(name === against);
      }
    }
    expect(new other.HttpStatusError(503, '') instanceof errors.HttpStatusError).toBe(true);
    expect(new other.RetriesExhaustedError([], 'x') instanceof errors.RetriesExhaustedError).toBe(true);
    expect({ code: 'ERR_TIMEOUT' } instanceof errors.TimeoutError).toBe(false);
    expect(new Error('plain') instanceof errors.InferenceError).toBe(false);
  });
});
