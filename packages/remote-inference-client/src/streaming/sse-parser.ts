import { StreamParseError } from '../errors.js';

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
 * What a `data` line costs beyond its bytes (its string and its slot in the event's list), counted against
 * `maxEventBytes`: empty or one-byte lines used to count 0 or 1 byte each, so a stream of them held ~12x the limit.
 */
const LINE_OVERHEAD_BYTES = 32;

/** What an {@link SseParser} may hold at once. */
export interface SseLimits {
  /** Longest event: the bytes of its unfinished line plus its `data` lines so far. @default 67108864 (64 MiB) */
  maxEventBytes?: number;
}

/**
 * A Buffer-level SSE parser (WHATWG rules): LF, CRLF or CR line ends, events split across chunks at any byte
 * (including inside a multi-byte character or between CR and LF), multi-line `data`, comments, unknown fields.
 * Lines are decoded only once complete, so a UTF-8 character split across chunks is never mangled.
 *
 * Every byte is scanned once: an unfinished line is kept as a list of chunks and joined once, when its end arrives
 * (joining and rescanning it on every chunk made a body without newlines cost quadratic CPU: 20 MB in 16 KB chunks
 * took 72 s and stalled every other request of the process). An event larger than `maxEventBytes` stops the parser and is
 * reported once through `onError`; it ignores everything after.
 */
export class SseParser {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly data: string[] = [];
  private dataBytes = 0;
  private event: string | undefined;
  private skipLeadingLf = false;
  /** Nothing parsed yet: a UTF-8 byte-order mark here is skipped, as the WHATWG rules say. */
  private atStart = true;
  private failed = false;
  private readonly maxEventBytes: number;

  constructor(
    private readonly onEvent: (event: SseEvent) => void,
    private readonly onError: (error: Error) => void = (error) => {
      throw error;
    },
    limits: SseLimits = {},
  ) {
    this.maxEventBytes = limits.maxEventBytes ?? 64 * 1024 * 1024;
  }

  /** Feeds bytes that arrived at `receivedAtMs`. */
  push(input: Buffer, receivedAtMs: number): void {
    let chunk = input;
    // An empty chunk changes nothing (it must not drop a pending CR's LF either).
    if (this.failed || chunk.length === 0) return;
    let position = 0;
    if (this.atStart) {
      if (this.pendingBytes > 0) {
        chunk = Buffer.concat([...this.pending, chunk]);
        this.pending = [];
        this.pendingBytes = 0;
      }
      if (chunk.length < 3 && chunk[0] === 0xef && (chunk.length < 2 || chunk[1] === 0xbb)) {
        // Maybe a byte-order mark split across chunks: wait for its last byte.
        this.pending.push(Buffer.from(chunk));
        this.pendingBytes = chunk.length;
        return;
      }
      this.atStart = false;
      if (chunk[0] === 0xef && chunk[1] === 0xbb && chunk[2] === 0xbf) position = 3;
    }
    if (this.skipLeadingLf) {
      this.skipLeadingLf = false;
      if (chunk.length > 0 && chunk[0] === LF) position = 1;
    }
    const length = chunk.length;
    // The next CR at or after `position`, searched again only once passed (servers rarely send CR at all, and a
    // fresh search per line would rescan the rest of the chunk every time).
    let cr = chunk.indexOf(CR, position);
    while (position < length) {
      let end = chunk.indexOf(LF, position);
      if (cr !== -1 && cr < position) cr = chunk.indexOf(CR, position);
      if (cr !== -1 && (end === -1 || cr < end)) end = cr;
      if (end === -1) break;
      if (this.pendingBytes > 0) {
        // The end of a line that began in earlier chunks: join it once.
        this.pending.push(chunk.subarray(position, end));
        const line = Buffer.concat(this.pending, this.pendingBytes + end - position);
        this.pending = [];
        this.pendingBytes = 0;
        this.line(line, 0, line.length, receivedAtMs);
      } else {
        this.line(chunk, position, end, receivedAtMs);
      }
      if (this.failed) return;
      if (chunk[end] === CR) {
        if (end + 1 < length) {
          position = chunk[end + 1] === LF ? end + 2 : end + 1;
        } else {
          // CR was the last byte: a following LF belongs to this line end.
          this.skipLeadingLf = true;
          position = end + 1;
        }
      } else {
        position = end + 1;
      }
    }
    if (position < length) {
      // Copied: the caller may reuse its buffer.
      this.pending.push(Buffer.from(chunk.subarray(position)));
      this.pendingBytes += length - position;
      this.checkSize();
    }
  }

  private checkSize(): void {
    if (this.failed || this.pendingBytes + this.dataBytes <= this.maxEventBytes) return;
    this.failed = true;
    this.pending = [];
    this.data.length = 0;
    this.onError(
      new StreamParseError(
        `A stream event exceeds ${this.maxEventBytes} bytes (no blank line ended it): the server is not sending SSE, or a limit is too low`,
      ),
    );
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
      this.dataBytes = 0;
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
      this.dataBytes += end - valueStart + LINE_OVERHEAD_BYTES;
      this.checkSize();
      return;
    }
    // Searched within the line only (searching the rest of the chunk for every line was quadratic).
    let colon = start;
    while (colon < end && buffer[colon] !== COLON) colon++;
    const field = buffer.toString('latin1', start, colon);
    let valueStart = colon < end ? colon + 1 : end;
    if (valueStart < end && buffer[valueStart] === SPACE) valueStart++;
    if (field === 'data') {
      this.data.push(buffer.toString('utf8', valueStart, end));
      this.dataBytes += end - valueStart + LINE_OVERHEAD_BYTES;
      this.checkSize();
    } else if (field === 'event') this.event = buffer.toString('utf8', valueStart, end);
    // id and retry do not matter for one-shot LLM streams.
  }

  /** Whether bytes of an unfinished event are buffered (a stream that ends here was cut). */
  get hasPendingEvent(): boolean {
    return this.pendingBytes > 0 || this.data.length > 0;
  }
}
