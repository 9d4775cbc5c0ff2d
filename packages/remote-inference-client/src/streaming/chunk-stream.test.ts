import { describe, expect, it } from 'vitest';
import { AbortError, InvalidOptionsError, StreamTruncatedError } from '../errors.js';
import { ChunkStream } from './chunk-stream.js';

const collect = async <T>(stream: ChunkStream<T>): Promise<T[]> => {
  const seen: T[] = [];
  for await (const chunk of stream) seen.push(chunk);
  return seen;
};

describe('ChunkStream', () => {
  it('delivers chunks pushed before and while the consumer waits, in order, then ends', async () => {
    const stream = new ChunkStream<number>(() => {});
    stream.push(1);
    stream.push(2);
    const seen = collect(stream);
    await new Promise((resolve) => setImmediate(resolve));
    stream.push(3);
    stream.push(4);
    stream.end();
    stream.push(5); // after the end: ignored
    expect(await seen).toEqual([1, 2, 3, 4]);
  });

  it('answers next() calls made before the chunks arrive in order; the end and a failure reach every waiter', async () => {
    const stream = new ChunkStream<number>(() => {});
    const iterator = stream[Symbol.asyncIterator]();
    // Before, the second waiter replaced the first, which never settled.
    const [first, second] = [iterator.next(), iterator.next()];
    stream.push(1);
    stream.push(2);
    expect(await Promise.all([first, second])).toEqual([
      { value: 1, done: false },
      { value: 2, done: false },
    ]);
    const [third, fourth] = [iterator.next(), iterator.next()];
    stream.fail(new StreamTruncatedError({ engine: 'e' }));
    await expect(third).rejects.toBeInstanceOf(StreamTruncatedError);
    expect(await fourth).toEqual({ value: undefined, done: true });
  });

  it('throws a failure after the chunks already pushed, once', async () => {
    const stream = new ChunkStream<number>(() => {});
    stream.push(1);
    stream.fail(new StreamTruncatedError({ engine: 'e' }));
    const iterator = stream[Symbol.asyncIterator]();
    expect(await iterator.next()).toEqual({ value: 1, done: false });
    await expect(iterator.next()).rejects.toBeInstanceOf(StreamTruncatedError);
    expect(await iterator.next()).toEqual({ value: undefined, done: true });
    expect(() => stream[Symbol.asyncIterator]()).toThrow(InvalidOptionsError);
    expect(() => stream[Symbol.asyncIterator]()).toThrow(/iterated once/);
  });

  it('break cancels the request behind it; a finished stream is not cancelled', async () => {
    const reasons: Error[] = [];
    const stream = new ChunkStream<number>((reason) => reasons.push(reason));
    stream.push(1);
    stream.push(2);
    for await (const _chunk of stream) break;
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toBeInstanceOf(AbortError);

    const finished = new ChunkStream<number>((reason) => reasons.push(reason));
    finished.push(1);
    finished.end();
    expect(await collect(finished)).toEqual([1]);
    expect(reasons).toHaveLength(1);
  });

  it('abort() while the consumer waits ends its wait with a typed error instead of leaving it hanging', async () => {
    const reasons: Error[] = [];
    const stream = new ChunkStream<number>((reason) => reasons.push(reason));
    const seen = collect(stream);
    await new Promise((resolve) => setImmediate(resolve));
    stream.abort(new Error('enough'));
    await expect(seen).rejects.toMatchObject({ code: 'ERR_ABORTED', message: 'enough' });
    expect(reasons.map((reason) => reason.message)).toEqual(['enough']);
  });
});
