import { AbortError, type InferenceError } from '../errors.js';

/**
 * An async iterable of parsed stream chunks. The producer pushes as bytes arrive; the consumer iterates.
 * `break` (or `return()`) aborts the request and frees its connection.
 */
export class ChunkStream<T> implements AsyncIterable<T> {
  private readonly buffer: T[] = [];
  private head = 0;
  private done = false;
  private error: InferenceError | undefined;
  private wake: (() => void) | undefined;
  private consumed = false;

  constructor(private readonly onCancel: (reason: Error) => void) {}

  /** @internal producer side */
  push(chunk: T): void {
    if (this.done) return;
    this.buffer.push(chunk);
    this.wake?.();
  }

  /** @internal producer side: normal end */
  end(): void {
    this.done = true;
    this.wake?.();
  }

  /** @internal producer side: failure (delivered after the chunks already pushed) */
  fail(error: InferenceError): void {
    if (this.done) return;
    this.error = error;
    this.done = true;
    this.wake?.();
  }

  /** Aborts the request behind this stream. */
  abort(reason: Error = new AbortError('Stream aborted by the caller')): void {
    if (this.done && this.head >= this.buffer.length) return;
    this.done = true;
    this.onCancel(reason);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.consumed) throw new Error('A stream can be iterated once');
    this.consumed = true;
    try {
      for (;;) {
        if (this.head < this.buffer.length) {
          const chunk = this.buffer[this.head]!;
          this.buffer[this.head++] = undefined as T;
          if (this.head > 1024 && this.head * 2 > this.buffer.length) {
            this.buffer.splice(0, this.head);
            this.head = 0;
          }
          yield chunk;
          continue;
        }
        if (this.done) {
          if (this.error) throw this.error;
          return;
        }
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = undefined;
      }
    } finally {
      if (!this.done || this.head < this.buffer.length) this.abort();
    }
  }
}
