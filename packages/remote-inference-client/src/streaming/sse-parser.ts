/** One server-sent event. */
export interface SseEvent {
  /** The `data` lines joined with `\n`. */
  data: string;
  /** The `event` field, when present. */
  event: string | undefined;
  /** `performance.now()` when the bytes that completed this event arrived (before any JSON parsing). */
  receivedAtMs: number;
}

const LF = 0x0a;
const CR = 0x0d;
const COLON = 0x3a;
const SPACE = 0x20;
const D = 0x64;
const A = 0x61;
const T = 0x74;

/**
 * A Buffer-level SSE parser (WHATWG rules): LF, CRLF or CR line ends, events split across chunks at any byte
 * (including inside a multi-byte character or between CR and LF), multi-line `data`, comments, unknown fields.
 * Lines are decoded only once complete, so a UTF-8 character split across chunks is never mangled.
 */
export class SseParser {
  private partial: Buffer | undefined;
  private readonly data: string[] = [];
  private event: string | undefined;
  private skipLeadingLf = false;

  constructor(private readonly onEvent: (event: SseEvent) => void) {}

  /** Feeds bytes that arrived at `receivedAtMs`. */
  push(chunk: Buffer, receivedAtMs: number): void {
    let buffer = chunk;
    let start = 0;
    if (this.skipLeadingLf) {
      this.skipLeadingLf = false;
      if (buffer.length > 0 && buffer[0] === LF) start = 1;
    }
    if (this.partial) {
      buffer = Buffer.concat([this.partial, buffer.subarray(start)]);
      start = 0;
      this.partial = undefined;
    }
    const length = buffer.length;
    let position = start;
    // The next CR at or after `position`, searched again only once passed (servers rarely send CR at all, and a
    // fresh search per line would rescan the rest of the chunk every time).
    let cr = buffer.indexOf(CR, position);
    while (position < length) {
      let end = buffer.indexOf(LF, position);
      if (cr !== -1 && cr < position) cr = buffer.indexOf(CR, position);
      if (cr !== -1 && (end === -1 || cr < end)) end = cr;
      if (end === -1) break;
      this.line(buffer, position, end, receivedAtMs);
      if (buffer[end] === CR) {
        if (end + 1 < length) {
          position = buffer[end + 1] === LF ? end + 2 : end + 1;
        } else {
          // CR was the last byte: a following LF belongs to this line end.
          this.skipLeadingLf = true;
          position = end + 1;
        }
      } else {
        position = end + 1;
      }
    }
    if (position < length) this.partial = Buffer.from(buffer.subarray(position));
  }

  private line(buffer: Buffer, start: number, end: number, receivedAtMs: number): void {
    if (start === end) {
      if (this.data.length > 0) {
        this.onEvent({
          data: this.data.length === 1 ? this.data[0]! : this.data.join('\n'),
          event: this.event,
          receivedAtMs,
        });
      }
      this.data.length = 0;
      this.event = undefined;
      return;
    }
    if (buffer[start] === COLON) return; // comment
    // The common line, `data: ...`, matched on bytes (no field string to allocate).
    if (
      end - start >= 5 &&
      buffer[start] === D &&
      buffer[start + 1] === A &&
      buffer[start + 2] === T &&
      buffer[start + 3] === A &&
      buffer[start + 4] === COLON
    ) {
      const valueStart = start + 5 < end && buffer[start + 5] === SPACE ? start + 6 : start + 5;
      this.data.push(buffer.toString('utf8', valueStart, end));
      return;
    }
    let colon = buffer.indexOf(COLON, start);
    if (colon === -1 || colon > end) colon = end;
    const field = buffer.toString('latin1', start, colon);
    let valueStart = colon < end ? colon + 1 : end;
    if (valueStart < end && buffer[valueStart] === SPACE) valueStart++;
    if (field === 'data') this.data.push(buffer.toString('utf8', valueStart, end));
    else if (field === 'event') this.event = buffer.toString('utf8', valueStart, end);
    // id and retry do not matter for one-shot LLM streams.
  }

  /** Whether bytes of an unfinished event are buffered (a stream that ends here was cut). */
  get hasPendingEvent(): boolean {
    return this.partial !== undefined || this.data.length > 0;
  }
}
