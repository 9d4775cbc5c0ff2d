import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
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

type ErrorsModule = typeof errors;

/** One instance of each error class, built from a given copy of the module. */
const BUILD: Record<string, (from: ErrorsModule) => errors.InferenceError> = {
  InferenceError: (from) => new from.InferenceError('ERR_UNEXPECTED', 'x'),
  InvalidOptionsError: (from) => new from.InvalidOptionsError('x'),
  ConnectionError: (from) => new from.ConnectionError('x', 'ECONNRESET'),
  TimeoutError: (from) => new from.TimeoutError('ttfb', 5),
  AbortError: (from) => new from.AbortError(),
  HttpStatusError: (from) => new from.HttpStatusError(503, ''),
  StreamInterruptedError: (from) => new from.StreamInterruptedError('x'),
  StreamTruncatedError: (from) => new from.StreamTruncatedError(),
  StreamParseError: (from) => new from.StreamParseError('x'),
  ServerStreamError: (from) => new from.ServerStreamError('x'),
  RetriesExhaustedError: (from) => new from.RetriesExhaustedError([], 'x'),
  EngineUnavailableError: (from) => new from.EngineUnavailableError('x'),
  PortsExhaustedError: (from) => new from.PortsExhaustedError(),
  TooManyOpenFilesError: (from) => new from.TooManyOpenFilesError(),
  QueueFullError: (from) => new from.QueueFullError(1),
  LimiterUnavailableError: (from) => new from.LimiterUnavailableError('x'),
  UnexpectedError: (from) => new from.UnexpectedError('x'),
  ClientClosedError: (from) => new from.ClientClosedError(),
};
const NAMES = Object.keys(BUILD);

function errorClasses(from: ErrorsModule): Map<string, abstract new (...args: never[]) => Error> {
  return new Map(
    Object.entries(from).filter(
      ([, value]) =>
        typeof value === 'function' &&
        (value === from.InferenceError || Object.prototype.isPrototypeOf.call(from.InferenceError, value)),
    ) as [string, abstract new (...args: never[]) => Error][],
  );
}

/** The built errors module copied elsewhere (a second copy of the package), optionally "minified". */
async function copyOfErrors(minify: boolean): Promise<ErrorsModule> {
  const dist = fileURLToPath(new URL('../dist', import.meta.url));
  const copy = mkdtempSync(join(tmpdir(), 'ric-copy-'));
  cpSync(dist, copy, { recursive: true });
  if (minify) {
    // What a minifier does to a class: renamed everywhere it is used as an identifier, exported under its public
    // name. The brand strings (`Symbol.for('remote-inference-client.error.<Name>')`) are data and stay.
    const file = join(copy, 'errors.js');
    let source = readFileSync(file, 'utf8');
    NAMES.forEach((name, index) => {
      source = source.replace(new RegExp(`(?<![.\\w])${name}\\b`, 'g'), `E${index}`);
    });
    source = source.replace(/export class (E\d+)/g, 'class $1');
    source += `\nexport { ${NAMES.map((name, index) => `E${index} as ${name}`).join(', ')} };\n`;
    writeFileSync(file, source);
  }
  return (await import(pathToFileURL(join(copy, 'errors.js')).href)) as ErrorsModule;
}

/** Whether `instance` (of class `built`) must be an instance of class `against`. */
const shouldMatch = (built: string, against: string) => built === against || against === 'InferenceError';

describe('errors: a bug on this side is never a connection failure', () => {
  it('a JavaScript error without a code (a stack overflow in a sink) maps to UnexpectedError, before or after bytes', () => {
    for (const afterResponseBytes of [false, true]) {
      for (const bug of [new RangeError('Maximum call stack size exceeded'), new TypeError("reading 'choices'")]) {
        const mapped = errors.mapTransportError(bug, { engine: 'http://127.0.0.1:1', afterResponseBytes });
        expect(mapped, `${bug.name}, afterResponseBytes ${afterResponseBytes}`).toBeInstanceOf(errors.UnexpectedError);
        expect(mapped.retryable).toBe(false);
        expect(mapped.cause).toBe(bug);
      }
    }
    // A socket error keeps its meaning.
    const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    expect(errors.mapTransportError(reset, { engine: 'x', afterResponseBytes: false })).toBeInstanceOf(
      errors.ConnectionError,
    );
    expect(errors.mapTransportError(reset, { engine: 'x', afterResponseBytes: true })).toBeInstanceOf(
      errors.StreamInterruptedError,
    );
  });
});

describe('errors: every class is branded across two copies of the package', () => {
  it('the table below covers every error class the module exports', () => {
    expect([...errorClasses(errors).keys()].sort()).toEqual([...NAMES].sort());
  });

  it('instanceof works between copies for each class, and only for the right class', async () => {
    const other = await copyOfErrors(false);
    expect(other.TimeoutError).not.toBe(errors.TimeoutError);
    const ours = errorClasses(errors);
    const theirs = errorClasses(other);
    for (const built of NAMES) {
      for (const [from, to] of [
        [other, ours],
        [errors, theirs],
        [errors, ours],
      ] as const) {
        const instance = BUILD[built]!(from);
        expect(instance instanceof Error).toBe(true);
        expect(errors.isInferenceError(instance)).toBe(true);
        for (const against of NAMES) {
          expect(instance instanceof to.get(against)!, `${built} instanceof ${against}`).toBe(
            shouldMatch(built, against),
          );
        }
      }
    }
    expect({ code: 'ERR_TIMEOUT' } instanceof errors.TimeoutError).toBe(false);
    expect(new Error('plain') instanceof errors.InferenceError).toBe(false);
  });

  it('brands and names survive a minifier renaming the classes', async () => {
    const minified = await copyOfErrors(true);
    const ours = errorClasses(errors);
    for (const built of NAMES) {
      const instance = BUILD[built]!(minified);
      // The rename took: the class itself is called something else now.
      expect(instance.constructor.name).toMatch(/^E\d+$/);
      for (const against of NAMES) {
        expect(instance instanceof ours.get(against)!, `minified ${built} instanceof ${against}`).toBe(
          shouldMatch(built, against),
        );
      }
      expect(instance.name).toBe(built);
      expect(BUILD[built]!(errors) instanceof errorClasses(minified).get(built)!).toBe(true);
    }
  });

  it("a caller's own subclass falls back to the prototype chain; the base brand alone still means InferenceError", () => {
    class MyTimeout extends errors.TimeoutError {}
    const mine = new MyTimeout('ttfb', 1);
    expect(mine.name).toBe('MyTimeout');
    expect(mine instanceof MyTimeout).toBe(true);
    expect(mine instanceof errors.TimeoutError).toBe(true);
    expect(mine instanceof errors.InferenceError).toBe(true);
    expect(new errors.TimeoutError('ttfb', 1) instanceof MyTimeout).toBe(false);
    // An error from a copy that predates the class brands carries only the base brand.
    const older = Object.assign(new Error('old'), { [Symbol.for('remote-inference-client.error')]: true });
    expect(older instanceof errors.InferenceError).toBe(true);
    expect(older instanceof errors.TimeoutError).toBe(false);
  });
});

describe('errors: retryable is decided by each class, never by its details', () => {
  it('details cannot override a subclass decision', () => {
    const flipped = (retryable: boolean) => ({ retryable: !retryable }) as never;
    const cases: [errors.InferenceError, (details: never) => errors.InferenceError][] = [
      [new errors.TimeoutError('ttfb', 1), (details) => new errors.TimeoutError('ttfb', 1, details)],
      [new errors.TimeoutError('connect', 1), (details) => new errors.TimeoutError('connect', 1, details)],
      [new errors.EngineUnavailableError('x'), (details) => new errors.EngineUnavailableError('x', details)],
      [new errors.InvalidOptionsError('x'), (details) => new errors.InvalidOptionsError('x', details)],
      [
        new errors.ConnectionError('x', 'ECONNRESET'),
        (details) => new errors.ConnectionError('x', 'ECONNRESET', details),
      ],
      [new errors.AbortError(), (details) => new errors.AbortError('x', details)],
      [new errors.HttpStatusError(400, ''), (details) => new errors.HttpStatusError(400, '', details)],
      [new errors.StreamInterruptedError('x'), (details) => new errors.StreamInterruptedError('x', details)],
      [new errors.StreamTruncatedError(), (details) => new errors.StreamTruncatedError(details)],
      [new errors.StreamParseError('x'), (details) => new errors.StreamParseError('x', details)],
      [new errors.ServerStreamError('x'), (details) => new errors.ServerStreamError('x', details)],
      [new errors.PortsExhaustedError(), (details) => new errors.PortsExhaustedError(details)],
      [new errors.TooManyOpenFilesError(), (details) => new errors.TooManyOpenFilesError(details)],
    ];
    for (const [plain, build] of cases) {
      expect(build(flipped(plain.retryable)).retryable, plain.name).toBe(plain.retryable);
    }
    expect(new errors.TimeoutError('ttfb', 1).retryable).toBe(false);
    expect(new errors.TimeoutError('connect', 1).retryable).toBe(true);
    expect(new errors.EngineUnavailableError('x').retryable).toBe(true);
  });
});
