import { describe, expect, it } from 'vitest';
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
