import { AbortError, type InferenceError, InvalidOptionsError, isInferenceError } from '../errors.js';

interface Waiter<T> {
  resolve: (result: IteratorResult<T>) => void;
  reject: (error: unknown) => void;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true });

/**
 * An async iterable of parsed stream chunks. The producer pushes as bytes arrive; the consumer iterates.
 * `break` (or `return()`) aborts the request and frees its connection.
 *
 * A hand-written iterator rather than an async generator: a chunk that finds the consumer waiting is handed over in
 * one promise, with no generator frame to resume and no intermediate queue. At 10,000 streams this path runs once per
 * token event.
 */
export class ChunkStream<T> implements AsyncIterable<T> {
  private readonly buffer: T[] = [];
  private head = 0;
  private done = false;
  private error: InferenceError | undefined;
  private errorDelivered = false;
  private waiter: Waiter<T> | undefined;
  /** next() calls made while an earlier one still waits (for await never does; a helper may), answered in order. */
  private laterWaiters: Waiter<T>[] | undefined;
  private consumed = false;
  private paused = false;

  /**
   * @param onCancel called once when the consumer aborts (or leaves the loop early).
   * @param onBacklog called with true when `highWaterMark` chunks wait unread (the producer should stop reading
   *   the socket: a caller that does not iterate a fast stream would otherwise buffer it whole, 1.1 GB in 8 s in the
   *   audit), and with false once the consumer has drained them.
   */
  /** @internal */
  constructor(
    private readonly onCancel: (reason: Error) => void,
    private readonly onBacklog: (paused: boolean) => void = () => {},
    private readonly highWaterMark = 1024,
  ) {}

  /** @internal producer side */
  push(chunk: T): void {
    if (this.done) return;
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = this.laterWaiters?.shift();
      waiter.resolve({ value: chunk, done: false });
      return;
    }
    this.buffer.push(chunk);
    if (!this.paused && this.buffer.length - this.head >= this.highWaterMark) {
      this.paused = true;
      this.onBacklog(true);
    }
  }

  /** @internal producer side: normal end */
  end(): void {
    this.done = true;
    this.settleWaiter();
  }

  /** @internal producer side: failure (delivered after the chunks already pushed) */
  fail(error: InferenceError): void {
    if (this.done) return;
    this.error = error;
    this.done = true;
    this.settleWaiter();
  }

  /** Aborts the request behind this stream; a consumer waiting for the next chunk gets the reason, typed. */
  abort(reason: Error = new AbortError('Stream aborted by the caller')): void {
    if (this.done && this.head >= this.buffer.length) return;
    if (!this.done) {
      this.done = true;
      this.error = isInferenceError(reason) ? reason : new AbortError(reason.message, { cause: reason });
      this.settleWaiter();
    }
    this.onCancel(reason);
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.consumed)
      throw new InvalidOptionsError('A stream can be iterated once: keep the chunks you need as you read them');
    this.consumed = true;
    return {
      next: () => this.next(),
      return: () => {
        // Leaving the loop early (break, return, a throw in its body) aborts the request.
        if (!this.done || this.head < this.buffer.length) this.abort();
        this.errorDelivered = true;
        return Promise.resolve(DONE);
      },
    };
  }

  private next(): Promise<IteratorResult<T>> {
    if (this.paused && this.buffer.length - this.head <= this.highWaterMark >> 1) {
      this.paused = false;
      this.onBacklog(false);
    }
    if (this.head < this.buffer.length) {
      const chunk = this.buffer[this.head]!;
      this.buffer[this.head++] = undefined as T;
      if (this.head === this.buffer.length) {
        this.buffer.length = 0;
        this.head = 0;
      } else if (this.head > 1024 && this.head * 2 > this.buffer.length) {
        this.buffer.splice(0, this.head);
        this.head = 0;
      }
      return Promise.resolve({ value: chunk, done: false });
    }
    if (this.done) return this.finalResult();
    return new Promise<IteratorResult<T>>((resolve, reject) => {
      // A second waiter used to replace the first, which then never settled.
      if (!this.waiter) this.waiter = { resolve, reject };
      else if (this.laterWaiters) this.laterWaiters.push({ resolve, reject });
      else this.laterWaiters = [{ resolve, reject }];
    });
  }

  /** The end of the stream: its error once, then `done`. */
  private finalResult(): Promise<IteratorResult<T>> {
    if (this.error && !this.errorDelivered) {
      this.errorDelivered = true;
      return Promise.reject(this.error);
    }
    return Promise.resolve(DONE);
  }

  private settleWaiter(): void {
    // The first waiter gets the error (once), the others `done`.
    while (this.waiter) {
      const waiter = this.waiter;
      this.waiter = this.laterWaiters?.shift();
      this.finalResult().then(waiter.resolve, waiter.reject);
    }
  }
}
