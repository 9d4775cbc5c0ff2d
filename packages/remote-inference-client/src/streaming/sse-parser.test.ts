import { describe, expect, it, vi } from 'vitest';
import { StreamParseError } from '../errors.js';
import { type SseEvent, SseParser } from './sse-parser.js';

function parse(chunks: (string | Buffer)[]): SseEvent[] {
  const events: SseEvent[] = [];
  const parser = new SseParser((event) => events.push(event));
  for (const [index, chunk] of chunks.entries())
    parser.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk, index);
  return events;
}

describe('SseParser', () => {
  const wire = 'data: {"a":1}\n\ndata: {"b":"ü✓"}\n\n: keep-alive comment\n\ndata: [DONE]\n\n';

  it('parses LF, CRLF and CR line ends alike', () => {
    for (const text of [wire, wire.replaceAll('\n', '\r\n'), wire.replaceAll('\n', '\r')]) {
      expect(parse([text]).map((event) => event.data)).toEqual(['{"a":1}', '{"b":"ü✓"}', '[DONE]']);
    }
  });

  it('handles events split at every byte, including inside a UTF-8 character and between CR and LF', () => {
    for (const text of [wire, wire.replaceAll('\n', '\r\n')]) {
      const bytes = Buffer.from(text);
      const split = [...bytes].map((byte) => Buffer.from([byte]));
      expect(parse(split).map((event) => event.data)).toEqual(['{"a":1}', '{"b":"ü✓"}', '[DONE]']);
    }
  });

  it('joins multi-line data, reads event names, ignores other fields and a space-less colon', () => {
    const events = parse(['event: update\nid: 7\nretry: 10\ndata: line one\ndata:line two\n\n']);
    expect(events).toEqual([{ data: 'line one\nline two', event: 'update', receivedAtMs: 0 }]);
  });

  it('stamps an event with the arrival time of the bytes that completed it', () => {
    const events = parse(['data: {"x"', ':1}\n', '\n']);
    expect(events[0]!.receivedAtMs).toBe(2);
  });

  it('reports an unfinished event', () => {
    const parser = new SseParser(() => {});
    parser.push(Buffer.from('data: {"half"'), 0);
    expect(parser.hasPendingEvent).toBe(true);
    parser.push(Buffer.from(':1}\n\n'), 1);
    expect(parser.hasPendingEvent).toBe(false);
  });
});

describe('SseParser bounds (hostile servers)', () => {
  it('an event over maxEventBytes without a blank line is one typed error, and the rest is ignored', () => {
    const errors: Error[] = [];
    const events: SseEvent[] = [];
    const parser = new SseParser(
      (event) => events.push(event),
      (error) => errors.push(error),
      { maxEventBytes: 1024 },
    );
    const noNewline = Buffer.alloc(300, 0x61);
    for (let index = 0; index < 10; index++) parser.push(noNewline, index);
    parser.push(Buffer.from('\n\ndata: late\n\n'), 11);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(StreamParseError);
    expect(errors[0]!.message).toMatch(/exceeds 1024 bytes/);
    expect(events).toEqual([]);
  });

  it('many data lines that never end their event count toward the same bound', () => {
    const errors: Error[] = [];
    const parser = new SseParser(
      () => {},
      (error) => errors.push(error),
      { maxEventBytes: 1024 },
    );
    for (let index = 0; index < 100; index++) parser.push(Buffer.from(`data: ${'x'.repeat(20)}\n`), index);
    expect(errors).toHaveLength(1);
  });

  it('skips a leading byte-order mark, whole or split, as the WHATWG rules say; an empty chunk drops no LF', () => {
    const bom = Buffer.from([0xef, 0xbb, 0xbf]);
    const body = Buffer.from('data: first\n\ndata: second\n\n');
    // Before, the BOM became part of the first line's field name and the first event was lost.
    expect(parse([Buffer.concat([bom, body])]).map((event) => event.data)).toEqual(['first', 'second']);
    expect(parse([bom.subarray(0, 1), Buffer.concat([bom.subarray(1), body])]).map((event) => event.data)).toEqual([
      'first',
      'second',
    ]);
    // A BOM only at the very start: later, the same bytes are data.
    expect(parse([body, Buffer.concat([Buffer.from('data: '), bom, Buffer.from('x\n\n')])])[2]!.data).toBe('\ufeffx');
    // CR, an empty chunk, then LF: one line end (an empty chunk used to forget the pending CR).
    expect(parse(['data: a\r', '', '\ndata: b\n\n']).map((event) => event.data)).toEqual(['a\nb']);
  });

  it('empty or tiny data lines count toward maxEventBytes by what they hold, not by their bytes alone', () => {
    const errors: Error[] = [];
    const parser = new SseParser(
      () => {},
      (error) => errors.push(error),
      { maxEventBytes: 1024 * 1024 },
    );
    // 100,000 empty data lines, no blank line: each still a string and a slot in the event (they counted 0 bytes,
    // so a stream of them grew without bound).
    const lines = Buffer.from('data:\n'.repeat(10_000));
    for (let index = 0; index < 10; index++) parser.push(lines, index);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(StreamParseError);
  });

  it('lines without a colon are scanned once: the bytes indexOf reads stay linear in the input', () => {
    // Counted, not timed: every indexOf call's actual scan (to the match, or to the end when there is none).
    const original = Buffer.prototype.indexOf;
    let scanned = 0;
    const counting = function (this: Buffer, value: number, from?: number): number {
      const found = original.call(this, value, from);
      const start = typeof from === 'number' ? from : 0;
      scanned += found === -1 ? this.length - start : found - start + 1;
      return found;
    };
    const spy = vi.spyOn(Buffer.prototype, 'indexOf').mockImplementation(counting as never);
    const chunk = Buffer.from('xy\n'.repeat((64 * 1024) / 3));
    const parser = new SseParser(() => {});
    try {
      for (let index = 0; index < 16; index++) parser.push(chunk, index);
    } finally {
      spy.mockRestore();
    }
    // Before, each such line searched the rest of its chunk for a colon: ~n^2/6 per 64 KB chunk (~700 MB here).
    expect(scanned).toBeLessThanOrEqual(4 * 16 * chunk.length);
    expect(scanned).toBeGreaterThanOrEqual(16 * chunk.length); // the count is live: each LF is found
  });

  it('a long line split over many chunks is joined once and parsed whole', () => {
    const payload = 'y'.repeat(200_000);
    const bytes = Buffer.from(`data: ${payload}\n\n`);
    const chunks: Buffer[] = [];
    for (let offset = 0; offset < bytes.length; offset += 1000) chunks.push(bytes.subarray(offset, offset + 1000));
    const events = parse(chunks);
    expect(events).toHaveLength(1);
    expect(events[0]!.data).toBe(payload);
  });

  it('a 10 MB body without a newline, in 16 KB chunks, is copied at most twice (linear, not quadratic)', () => {
    // The audit's row: a parser that re-joined its unfinished line on every chunk copied ~n^2/2 bytes (20 MB of
    // input in 16 KB chunks cost 72 s of CPU and stalled the process). Counted in the bytes Buffer.concat and Buffer.from make
    // (the ways a parser copies), not timed, and not by the parser's own account.
    const inputBytes = 10 * 1024 * 1024;
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    const events: SseEvent[] = [];
    const parser = new SseParser((event) => events.push(event));
    const { concat, from } = Buffer;
    let copied = 0;
    const counted = <F extends (...args: never[]) => Buffer>(make: F) =>
      ((...args: Parameters<F>) => {
        const made = make.apply(Buffer, args);
        copied += made.length;
        return made;
      }) as never;
    const concatSpy = vi.spyOn(Buffer, 'concat').mockImplementation(counted(concat));
    const fromSpy = vi.spyOn(Buffer, 'from').mockImplementation(counted(from as (...args: never[]) => Buffer));
    try {
      parser.push(from('data: '), 0);
      for (let fed = 0; fed < inputBytes; fed += chunk.length) parser.push(chunk, 1);
      expect(copied).toBeLessThanOrEqual(2 * inputBytes);
      parser.push(from('\n\n'), 2);
    } finally {
      concatSpy.mockRestore();
      fromSpy.mockRestore();
    }
    expect(events).toHaveLength(1);
    expect(events[0]!.data).toHaveLength(inputBytes);
    expect(copied).toBeLessThanOrEqual(2 * (inputBytes + 8));
    // The counting itself is live: the join at the end alone copies the whole input.
    expect(copied).toBeGreaterThanOrEqual(inputBytes);
  });
});
