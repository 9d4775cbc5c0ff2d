import { performance } from 'node:perf_hooks';
import type { EngineRequest, RequestSink } from '../engine.js';
import type { EngineHost, TallyCounters } from '../engine-host.js';
import type { FaultSpec } from '../faults.js';
import { numberParam } from '../faults.js';
import { createGeneration, type Generation, StreamAssembler } from '../generation.js';
import {
  checkJsonContentType,
  type GenerationJob,
  HttpError,
  type ParseContext,
  ResponseFormatter,
} from '../protocol.js';
import { holdBeforeHeaders, injectBeforeResponse, MidStreamFault } from './request-faults.js';
import type { ResponseWriter, RouteContext } from './route.js';

/** Timing headers every generation response carries: the server's own view, for clients to subtract. */
export const TIMING_HEADERS = {
  requestId: 'x-fake-request-id',
  queueMs: 'x-fake-queue-ms',
  ttftMs: 'x-fake-ttft-ms',
  e2eMs: 'x-fake-e2e-ms',
  /** Prompt tokens found in the engine's prefix cache (summed over the request's sequences). */
  cachedTokens: 'x-fake-cached-tokens',
} as const;

/**
 * The server's own timings of a finished request as a standard `Server-Timing` value (durations in ms): `queue`
 * (arrival to admission), `ttft` (arrival to first token), `e2e`, and `prefill` (admission to first token: the
 * prefill the engine charged, for the prompt part its prefix cache did not hold) with `desc` = prompt tokens found
 * in the prefix cache.
 */
export function serverTiming(engineRequest: EngineRequest): string {
  const e2eMs = engineRequest.finishedAtMs - engineRequest.arrivedAtMs;
  const prefill = `prefill;dur=${engineRequest.prefillMs.toFixed(3)};desc="${engineRequest.cachedTokens}"`;
  return `queue;dur=${engineRequest.queueMs.toFixed(3)}, ttft;dur=${engineRequest.ttftMs.toFixed(3)}, e2e;dur=${e2eMs.toFixed(3)}, ${prefill}`;
}

/** Turns a request body into a validated generation job (throws `HttpError` with vLLM's body when invalid). */
export type GenerationParser = (body: unknown, context: ParseContext) => GenerationJob;

/**
 * Serves one generation request: parse, faults, submit to the engine, then stream or answer whole. Built-in
 * generation routes use it; an extra route (a preset's own generate endpoint) can too, with its own parser.
 */
export async function serveGeneration(
  { request, response, host }: RouteContext,
  parse: GenerationParser,
  idPrefix: string,
): Promise<void> {
  const arrivedAtMs = performance.now();
  checkJsonContentType(request.header('content-type'));
  const body = await request.json();
  const fault = host.pickFault(request);
  const job = parse(body, host.parseContext);
  // A request for a LoRA adapter is answered under the adapter's name, as vLLM does.
  const requested = (body as { model?: unknown } | null)?.model;
  const model = typeof requested === 'string' && host.loras.has(requested) ? requested : host.options.model;
  if (fault && injectBeforeResponse(fault, host, response)) return;
  if (job.engineError) {
    // vLLM's engine rejects the request only once it is submitted: a stream has already answered 200.
    if (!job.stream) throw job.engineError;
    const { message, type, status, param } = job.engineError;
    response.startStream(200, { 'content-type': 'text/event-stream; charset=utf-8' });
    response.write(`${ResponseFormatter.errorEvent(message, type, status, param)}data: [DONE]\n\n`);
    response.end();
    return;
  }
  if (fault?.name === 'hang-before-headers') {
    await holdBeforeHeaders(fault, host);
    if (response.closed) return;
  }
  const deferred: { sink?: Sink } = {};
  const sinkProxy: RequestSink = {
    onProgress: () => deferred.sink!.onProgress(),
    onFinish: (finished) => {
      host.metrics.recordFinished(finished, job.n, job.maxTokens);
      deferred.sink!.onFinish();
    },
  };
  const generation = createGeneration(
    job,
    idPrefix,
    model,
    host.options.vocabSize,
    sinkProxy,
    arrivedAtMs,
    request.header('x-request-id'),
    host.options.outputLengths,
  );
  const tally = host.tallyOf(request);
  const sink = job.stream
    ? new StreamSink(host, response, generation, fault, tally)
    : new WholeSink(host, response, generation, fault, tally);
  deferred.sink = sink;
  const { engineRequest } = generation;
  if (fault?.name === 'slow-stream') {
    host.injector.count(fault.name);
    engineRequest.stepEvery = Math.max(1, Math.round(numberParam(fault, 'factor', 10)));
  }
  response.onClose(() => {
    // A client that goes away aborts its request, and vLLM counts it finished with reason abort.
    const { state } = engineRequest;
    if (state === 'finished' || state === 'cancelled') return;
    host.engine.cancel(engineRequest);
    host.metrics.recordFinished(engineRequest, job.n, job.maxTokens, true);
  });
  if (!host.engine.submit(engineRequest)) {
    const error = new HttpError(429, 'The engine waiting queue is full', 'TooManyRequestsError');
    response.send(429, { 'content-type': 'application/json', 'retry-after': '1' }, error.body());
  } else if (sink instanceof StreamSink) {
    sink.start();
  }
}

/** Receives one request's engine progress and writes it through a {@link ResponseWriter}. */
abstract class Sink {
  protected readonly engineRequest: EngineRequest;
  protected readonly midStream: MidStreamFault;

  constructor(
    protected readonly host: EngineHost,
    protected readonly response: ResponseWriter,
    protected readonly generation: Generation,
    fault: FaultSpec | undefined,
    protected readonly tally: TallyCounters | undefined,
  ) {
    this.engineRequest = generation.engineRequest;
    this.midStream = new MidStreamFault(fault, host, this.engineRequest);
  }

  abstract onProgress(): void;
  abstract onFinish(): void;

  /** Counts a whole answer in the request's tally; a body with a malformed chunk in it is not one. */
  protected countAnswered(): void {
    if (this.tally && !(this.midStream.fired && this.midStream.name === 'malformed-chunk')) this.tally.answered++;
  }

  protected reset(): void {
    this.host.engine.cancel(this.engineRequest);
    this.response.reset();
  }
}

/** Streams SSE: one write per engine step with every sequence's new tokens. */
class StreamSink extends Sink {
  private readonly assembler = new StreamAssembler(this.generation);
  /** Events are held while the client is not reading; the engine's new tokens merge into the next event. */
  private held = false;
  private readonly resumeWriting = (): void => {
    this.held = false;
    if (this.response.closed || this.assembler.allFinished()) return;
    const frames = this.assembler.drain();
    if (frames !== '') this.response.write(frames);
  };

  /**
   * The status line and headers go out as soon as the engine accepted the request, while it is still queued,
   * paused or in prefill, as vLLM's Starlette `StreamingResponse` behind uvicorn does (it sends
   * `http.response.start` before iterating the generator; measured with real uvicorn: headers after 2 ms, the first
   * data event after the generator's first yield). The server's own timings cannot be known yet: they follow as a
   * `Server-Timing` trailer (the header's standard place once a body has started).
   */
  start(): void {
    const response = this.response;
    if (response.headersSent || response.closed) return;
    response.startStream(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      [TIMING_HEADERS.requestId]: this.engineRequest.id,
      trailer: 'server-timing',
    });
    if (this.midStream.name === 'reset-mid-stream' && this.midStream.triggerAfter === 0) {
      // `after_tokens=0`: the engine goes away after the 200 and before any token, as when an engine restarts
      // while the request waits in its queue (the common case on a real fleet).
      this.midStream.fire();
      this.host.engine.cancel(this.engineRequest);
      response.reset({ afterFlush: true });
    }
  }

  onProgress(): void {
    const response = this.response;
    if (response.closed) return;
    const fault = this.midStream.due();
    if (fault === 'reset-mid-stream') {
      // `after_tokens=N` means the client received N tokens, then the reset: write this step's frames first and
      // reset once they are handed to the kernel (a reset discards whatever is still queued on our side).
      const frames = this.assembler.drain();
      if (frames === '') {
        this.reset();
        return;
      }
      this.host.engine.cancel(this.engineRequest);
      response.write(frames);
      response.reset({ afterFlush: true });
      return;
    }
    if (fault === undefined) {
      // When every sequence has finished, onFinish writes the last tokens, the usage and [DONE] in one write.
      if (this.held || this.assembler.allFinished()) return;
      // A client that fell behind gets one event with every token made meanwhile once it has read what is queued,
      // as from vLLM: uvicorn's send() awaits drain() above its high-water mark, and the engine's outputs for the
      // request merge until the generator takes the next one (RequestOutputCollector, v1/engine/output_processor.py).
      // Memory per stream stays bounded whatever the client does.
      if (this.response.backedUp(this.resumeWriting)) {
        this.held = true;
        return;
      }
    }
    let frames = this.assembler.drain();
    if (fault === 'malformed-chunk') frames += 'data: {"id":"malformed","choices":[{"index":0,"text":\n\n';
    if (fault === 'error-mid-stream') {
      frames += ResponseFormatter.errorEvent('Injected error after the stream started', 'InternalServerError', 500);
      frames += 'data: [DONE]\n\n';
      response.write(frames);
      this.host.engine.cancel(this.engineRequest);
      response.end();
      return;
    }
    if (fault === 'truncate-stream') {
      response.write(frames);
      this.host.engine.cancel(this.engineRequest);
      response.end();
      return;
    }
    if (fault === 'stall') this.midStream.stall(response);
    if (frames !== '') response.write(frames);
  }

  onFinish(): void {
    const response = this.response;
    if (response.closed) return;
    response.write(this.assembler.finish());
    response.end({ 'server-timing': serverTiming(this.engineRequest) });
    this.countAnswered();
  }
}

/** Non-streaming: the whole JSON body once every sequence has finished. */
class WholeSink extends Sink {
  onProgress(): void {
    // Body-level faults (truncate, malformed, error) apply once, at finish, and are counted there.
    const name = this.midStream.name;
    if (name !== 'reset-mid-stream' && name !== 'stall') return;
    const fault = this.midStream.due();
    if (fault === 'reset-mid-stream') this.reset();
    else if (fault === 'stall') this.midStream.stall(this.response);
  }

  onFinish(): void {
    const response = this.response;
    if (response.closed) return;
    const engineRequest = this.engineRequest;
    const { formatter, promptIndexOf } = this.generation;
    let body = formatter.fullBody(engineRequest, (sequence) => promptIndexOf.get(sequence)!);
    const headers = {
      'content-type': 'application/json',
      [TIMING_HEADERS.requestId]: engineRequest.id,
      [TIMING_HEADERS.queueMs]: engineRequest.queueMs.toFixed(3),
      [TIMING_HEADERS.ttftMs]: engineRequest.ttftMs.toFixed(3),
      [TIMING_HEADERS.e2eMs]: (engineRequest.finishedAtMs - engineRequest.arrivedAtMs).toFixed(3),
      [TIMING_HEADERS.cachedTokens]: String(engineRequest.cachedTokens),
      'server-timing': serverTiming(engineRequest),
    };
    const fault = this.midStream.name;
    if (fault === 'error-mid-stream') {
      this.midStream.fire();
      const error = new HttpError(500, 'Injected error during generation', 'InternalServerError');
      response.send(500, { 'content-type': 'application/json' }, error.body());
      return;
    }
    if (fault === 'truncate-stream' || fault === 'malformed-chunk') {
      this.midStream.fire();
      const full = Buffer.byteLength(body);
      body = body.slice(0, Math.floor(body.length / 2));
      if (fault === 'truncate-stream') {
        // Promise the whole length, send half, close: the client sees a body cut short.
        response.startStream(200, { ...headers, 'content-length': full });
        response.write(body);
        response.destroy();
        return;
      }
    }
    response.send(200, headers, body);
    this.countAnswered();
  }
}
