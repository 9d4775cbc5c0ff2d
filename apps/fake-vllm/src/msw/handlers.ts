import { performance } from 'node:perf_hooks';
import { HttpResponse, http, type RequestHandler } from 'msw';
import { Engine } from '../engine.js';
import { FakeVllmConfigError } from '../errors.js';
import { FAULT_HEADER, FaultInjector, type FaultSpec, numberParam, parseFaultHeader } from '../faults.js';
import { createGeneration, StreamAssembler } from '../generation.js';
import { type EngineOptions, resolveEngineOptions } from '../options.js';
import {
  checkJsonContentType,
  type GenerationJob,
  HttpError,
  invalidJsonError,
  type ParseContext,
  parseChatRequest,
  parseCompletionRequest,
  parseGenerateRequest,
  ResponseFormatter,
} from '../protocol.js';
import { detokenize, tokenize } from '../tokens.js';

/** Options of {@link createFakeVllmHandlers}. */
export interface FakeVllmHandlersOptions extends EngineOptions {
  /** Origin the handlers answer for, e.g. `http://fake-vllm.test`. @default "http://fake-vllm.test" */
  baseUrl?: string;
}

/** msw handlers backed by one fake engine, and that engine for inspection. */
export interface FakeVllmHandlers {
  handlers: RequestHandler[];
  engine: Engine;
  injector: FaultInjector;
  baseUrl: string;
}

const encoder = new TextEncoder();

function errorResponse(error: unknown): Response {
  if (error instanceof HttpError) {
    return new HttpResponse(error.body(), { status: error.status, headers: { 'content-type': 'application/json' } });
  }
  const message = error instanceof Error ? error.message : String(error);
  const status = error instanceof FakeVllmConfigError ? 400 : 500;
  return HttpResponse.json({ error: { message, type: 'BadRequestError', param: null, code: status } }, { status });
}

/**
 * The fake engine as msw request handlers, for testing fetch-based code (openai-node, plain fetch) in-process:
 * same wire format, same deterministic tokens, same queueing and timing, same HTTP-level faults. Socket-level
 * faults (`reset-*`, `refuse-connections`) become msw network errors, since msw has no socket to reset.
 */
export function createFakeVllmHandlers(options: FakeVllmHandlersOptions = {}): FakeVllmHandlers {
  const baseUrl = (options.baseUrl ?? 'http://fake-vllm.test').replace(/\/$/, '');
  const resolved = resolveEngineOptions(options);
  const engine = new Engine(resolved);
  const injector = new FaultInjector(resolved.faultProfile, resolved.seed);
  const context: ParseContext = {
    model: resolved.model,
    maxModelLen: resolved.maxModelLen,
    vocabSize: resolved.vocabSize,
    seed: resolved.seed,
    eosProbability: resolved.eosProbability,
  };

  const generation =
    (parse: (body: unknown, context: ParseContext) => GenerationJob, idPrefix: string) =>
    async ({ request }: { request: Request }): Promise<Response> => {
      const arrivedAtMs = performance.now();
      try {
        const header = request.headers.get(FAULT_HEADER);
        const fault: FaultSpec | undefined = header ? parseFaultHeader(header) : injector.rollRequest();
        checkJsonContentType(request.headers.get('content-type') ?? undefined);
        const job = parse(
          await request.json().catch((error: Error) => {
            throw invalidJsonError(error.message);
          }),
          context,
        );
        if (fault) {
          const early = earlyFault(fault, injector);
          if (early) return early;
        }
        if (job.engineError) {
          // vLLM's engine rejects the request only once it is submitted: a stream has already answered 200.
          if (!job.stream) throw job.engineError;
          const { message, type, status, param } = job.engineError;
          const frames = `${ResponseFormatter.errorEvent(message, type, status, param)}data: [DONE]\n\n`;
          return new HttpResponse(frames, { headers: { 'content-type': 'text/event-stream; charset=utf-8' } });
        }
        const requestId = request.headers.get('x-request-id') ?? undefined;
        return await run(job, idPrefix, arrivedAtMs, fault, request.signal, requestId);
      } catch (error) {
        return errorResponse(error);
      }
    };

  const run = (
    job: GenerationJob,
    idPrefix: string,
    arrivedAtMs: number,
    fault: FaultSpec | undefined,
    signal: AbortSignal,
    requestId: string | undefined,
  ): Promise<Response> =>
    new Promise<Response>((resolve) => {
      let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
      let assembler: StreamAssembler | undefined;
      const resetAfter = fault?.name === 'reset-mid-stream' ? numberParam(fault, 'after_tokens', 1) : -1;
      const headers = () => ({
        'x-fake-request-id': created.engineRequest.id,
        'x-fake-queue-ms': created.engineRequest.queueMs.toFixed(3),
        'x-fake-ttft-ms': created.engineRequest.ttftMs.toFixed(3),
      });
      const created = createGeneration(
        job,
        idPrefix,
        resolved.model,
        resolved.vocabSize,
        {
          onProgress: (request) => {
            if (resetAfter >= 0 && (request.sequences[0]?.tokenIds.length ?? 0) >= resetAfter) {
              injector.count('reset-mid-stream');
              engine.cancel(request);
              if (controller) controller.error(new TypeError('Injected reset mid-stream'));
              else resolve(HttpResponse.error());
              return;
            }
            if (!job.stream || !assembler || assembler.allFinished()) return;
            const frames = assembler.drain();
            if (!controller) {
              const stream = new ReadableStream<Uint8Array>({
                start(streamController) {
                  controller = streamController;
                },
                cancel() {
                  engine.cancel(request);
                },
              });
              resolve(
                new HttpResponse(stream, {
                  headers: { 'content-type': 'text/event-stream; charset=utf-8', ...headers() },
                }),
              );
            }
            controller!.enqueue(encoder.encode(frames));
          },
          onFinish: (request) => {
            if (!job.stream) {
              const body = created.formatter.fullBody(request, (sequence) => created.promptIndexOf.get(sequence)!);
              resolve(new HttpResponse(body, { headers: { 'content-type': 'application/json', ...headers() } }));
              return;
            }
            const frames = encoder.encode(assembler!.finish());
            if (controller) {
              controller.enqueue(frames);
              controller.close();
            } else {
              resolve(
                new HttpResponse(frames, {
                  headers: { 'content-type': 'text/event-stream; charset=utf-8', ...headers() },
                }),
              );
            }
          },
        },
        arrivedAtMs,
        requestId,
      );
      assembler = job.stream ? new StreamAssembler(created) : undefined;
      if (fault?.name === 'slow-stream') {
        injector.count('slow-stream');
        created.engineRequest.stepEvery = Math.max(1, Math.round(numberParam(fault, 'factor', 10)));
      }
      signal.addEventListener('abort', () => engine.cancel(created.engineRequest), { once: true });
      if (!engine.submit(created.engineRequest)) {
        resolve(errorResponse(new HttpError(429, 'The engine waiting queue is full', 'TooManyRequestsError')));
      }
    });

  const json = (body: unknown) => HttpResponse.json(body as Record<string, unknown>);
  const handlers: RequestHandler[] = [
    http.post(`${baseUrl}/v1/completions`, generation(parseCompletionRequest, 'cmpl')),
    http.post(`${baseUrl}/v1/chat/completions`, generation(parseChatRequest, 'chatcmpl')),
    http.post(`${baseUrl}/inference/v1/generate`, generation(parseGenerateRequest, 'generate-tokens')),
    http.get(`${baseUrl}/health`, () => new HttpResponse(null, { status: 200 })),
    http.get(`${baseUrl}/v1/models`, () =>
      json({
        object: 'list',
        data: [
          {
            id: resolved.model,
            object: 'model',
            created: 0,
            owned_by: 'vllm',
            root: resolved.model,
            parent: null,
            max_model_len: resolved.maxModelLen,
            permission: [],
          },
        ],
      }),
    ),
    http.post(`${baseUrl}/tokenize`, async ({ request }) => {
      const body = (await request.json()) as { prompt?: string };
      const tokens = tokenize(body.prompt ?? '', resolved.vocabSize);
      return json({ count: tokens.length, max_model_len: resolved.maxModelLen, tokens, token_strs: null });
    }),
    http.post(`${baseUrl}/detokenize`, async ({ request }) => {
      const body = (await request.json()) as { tokens?: number[] };
      return json({ prompt: detokenize(body.tokens ?? [], resolved.vocabSize) });
    }),
  ];
  return { handlers, engine, injector, baseUrl };
}

function earlyFault(fault: FaultSpec, injector: FaultInjector): Response | undefined {
  switch (fault.name) {
    case 'reset-before-response':
    case 'refuse-connections':
    case 'idle-close-race':
      injector.count(fault.name);
      return HttpResponse.error();
    case 'status-429':
    case 'status-503': {
      injector.count(fault.name);
      const status = fault.name === 'status-429' ? 429 : 503;
      const retryAfter = fault.params.retry_after ?? '1';
      const type = status === 429 ? 'TooManyRequestsError' : 'ServiceUnavailableError';
      return new HttpResponse(new HttpError(status, `Injected ${status}`, type).body(), {
        status,
        headers: {
          'content-type': 'application/json',
          ...(retryAfter === 'none' ? {} : { 'retry-after': retryAfter }),
        },
      });
    }
    case 'status-500-text':
      injector.count(fault.name);
      return new HttpResponse('Internal Server Error', { status: 500, headers: { 'content-type': 'text/plain' } });
    case 'status-422':
      injector.count(fault.name);
      return HttpResponse.json(
        { detail: [{ type: 'missing', loc: ['body', 'injected'], msg: 'Field required', input: null }] },
        { status: 422 },
      );
    default:
      return undefined;
  }
}
