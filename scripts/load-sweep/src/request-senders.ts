import { performance } from 'node:perf_hooks';
import {
  type ClientStats,
  RemoteInferenceClient,
  type RemoteInferenceClientOptions,
  type RequestStats,
  type SseEvent,
  SseParser,
} from 'remote-inference-client';
import { Agent, request as undiciRequest } from 'undici';
import type { RolloutPolicy, SweepOptions } from './options.js';
import { errorKind, type Outcome } from './outcome.js';
import type { PlannedRequest } from './request-source.js';

/** Sends one planned request and reports what came back; never rejects. */
export interface RequestSender {
  send(request: PlannedRequest, engineIndex: number, headers: Record<string, string> | undefined): Promise<Outcome>;
  /** The SDK's counters (undefined in direct mode). */
  stats(): ClientStats | undefined;
  close(): Promise<void>;
}

/**
 * The SDK options of each `--policy` of `--scenario rollout-step` (those of `bench:rollouts`). With sessions (`--session-turns`
 * > 1) the two SDK policies route with session affinity; the baseline stays round robin, as SkyRL's router. Every
 * policy retries alike, with no retry budget: every rollout counts in a synchronous step, and a restart drops a
 * fixed-cap engine's whole share at once.
 */
export function policyClientOptions(
  policy: RolloutPolicy,
  sessions: boolean,
): Pick<RemoteInferenceClientOptions, 'routing' | 'limits' | 'retry'> {
  const retry = {
    maxAttempts: 8,
    budgetRatio: 1,
    minRetriesPerSecond: 1_000_000,
    baseBackoffMs: 50,
    maxBackoffMs: 1000,
  };
  const routing = sessions ? 'session-affinity' : 'least-outstanding';
  switch (policy) {
    case 'baseline':
      return { routing: 'round-robin', limits: { perEngine: { maxConcurrency: 512 } }, retry };
    case 'least-outstanding':
      return { routing, limits: { perEngine: { maxConcurrency: 512 } }, retry };
    case 'late-binding':
      return { routing, limits: { perEngine: { adaptive: true } }, retry };
  }
}

/** The sweep's requests through the SDK: its limits, routing, retries and (with `--resume`) resume. */
export class SdkSender implements RequestSender {
  private readonly client: RemoteInferenceClient;
  /** `rollout-step`: ask engines for exactly `max_tokens` (vLLM's `ignore_eos`), so the drawn lengths hold on real models too. */
  private readonly extra: Record<string, unknown>;

  constructor(
    private readonly options: SweepOptions,
    engines: string[],
    /** `rollout-step`: the policy's SDK options; otherwise the sweep's own (least outstanding, no per-engine cap). */
    policy?: RolloutPolicy,
  ) {
    this.extra = policy === undefined ? {} : { ignore_eos: true };
    this.client = new RemoteInferenceClient({
      engines,
      ...(options.apiKey ? { apiKey: options.apiKey } : {}),
      ...(options.model ? { model: options.model } : {}),
      routing: options.sessionTurns > 1 ? 'session-affinity' : 'least-outstanding',
      sourceIps: options.sourceIps,
      limits: { perEngine: { maxConcurrency: 1_000_000 } },
      ...(policy === undefined ? {} : policyClientOptions(policy, options.sessionTurns > 1)),
      ...(options.requestTimeoutMs ? { timeouts: { totalMs: options.requestTimeoutMs } } : {}),
      onRequestEnd: (stats) => {
        (stats.tag as { stats?: RequestStats }).stats = stats;
      },
    });
  }

  async send(request: PlannedRequest, _engineIndex: number, headers: Record<string, string> | undefined) {
    const { options, client } = this;
    const started = performance.now();
    const holder: { stats?: RequestStats } = {};
    const requestOptions = {
      tag: holder,
      ...(request.sessionId ? { sessionId: request.sessionId } : {}),
      ...(headers ? { headers } : {}),
    };
    const sampling = { max_tokens: request.maxTokens, seed: request.seed, ...this.extra };
    const tokenIds: number[] = [];
    let text = '';
    let kind: string | undefined;
    try {
      if (options.endpoint === 'generate') {
        const body = {
          token_ids: request.promptTokenIds,
          sampling_params: sampling,
          ...(options.model ? { model: options.model } : {}),
        };
        if (options.stream) {
          const stream = await client.generate(
            { ...body, stream: true },
            { ...requestOptions, resume: options.resume },
          );
          for await (const chunk of stream) tokenIds.push(...(chunk.choices[0]?.token_ids ?? []));
        } else {
          tokenIds.push(...((await client.generate(body, requestOptions)).choices[0]?.token_ids ?? []));
        }
      } else if (options.endpoint === 'completions') {
        const body = { prompt: request.promptTokenIds, ...sampling };
        if (options.stream) {
          for await (const chunk of await client.completions.create({ ...body, stream: true }, requestOptions))
            text += chunk.choices[0]?.text ?? '';
        } else {
          text = (await client.completions.create(body, requestOptions)).choices[0]?.text ?? '';
        }
      } else {
        const body = { messages: request.messages!, ...sampling };
        if (options.stream) {
          for await (const chunk of await client.chat.completions.create({ ...body, stream: true }, requestOptions))
            text += String(chunk.choices[0]?.delta.content ?? '');
        } else {
          text = String((await client.chat.completions.create(body, requestOptions)).choices[0]?.message.content ?? '');
        }
      }
    } catch (error) {
      kind = errorKind(error);
    }
    const stats = holder.stats;
    return {
      ok: kind === undefined,
      errorKind: kind,
      tokenIds,
      text,
      ttftMs: stats?.ttftMs,
      gapsMs: kind === undefined ? (stats?.interTokenGapsMs ?? []) : [],
      e2eMs: performance.now() - started,
      stats,
      // Every request the SDK starts ends with its stats (the hook is set); 1 covers one that failed before.
      attempts: stats?.attempts ?? 1,
      staleRetries: stats?.staleRetries ?? 0,
    } satisfies Outcome;
  }

  stats(): ClientStats {
    return this.client.stats();
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

const PATHS = { generate: '/inference/v1/generate', completions: '/v1/completions', chat: '/v1/chat/completions' };

/**
 * Plain undici with a stock Agent: no limits, routing, retries or resume; the baseline of the SDK's own cost. Streams
 * are read with the SDK's SSE parser (LF, CRLF or CR line ends, events split anywhere), so the two modes parse alike.
 */
export class DirectSender implements RequestSender {
  private readonly agent: Agent;

  constructor(
    private readonly options: SweepOptions,
    private readonly engines: string[],
  ) {
    const timeoutMs = options.requestTimeoutMs ?? 0;
    this.agent = new Agent({ connections: 50_000, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  }

  async send(request: PlannedRequest, engineIndex: number, headers: Record<string, string> | undefined) {
    const { options } = this;
    const engine = this.engines[engineIndex % this.engines.length]!;
    const started = performance.now();
    const sampling = { max_tokens: request.maxTokens, seed: request.seed };
    const body =
      options.endpoint === 'generate'
        ? { token_ids: request.promptTokenIds, sampling_params: sampling, stream: options.stream }
        : options.endpoint === 'completions'
          ? { prompt: request.promptTokenIds, ...sampling, stream: options.stream }
          : { messages: request.messages, ...sampling, stream: options.stream };
    const tokenIds: number[] = [];
    const gapsMs: number[] = [];
    let text = '';
    let ttftMs: number | undefined;
    let lastEventMs = 0;
    const outcome = (kind: string | undefined): Outcome => ({
      ok: kind === undefined,
      errorKind: kind,
      tokenIds,
      text,
      ttftMs,
      gapsMs,
      e2eMs: performance.now() - started,
      stats: undefined,
      attempts: 1,
      staleRetries: 0,
    });
    const take = (payload: Record<string, unknown>) => {
      const choice = (payload.choices as Array<Record<string, unknown>> | undefined)?.[0];
      if (!choice) return;
      tokenIds.push(...((choice.token_ids as number[] | undefined) ?? []));
      text +=
        (choice.text as string | undefined) ??
        ((choice.delta as { content?: string } | undefined)?.content ?? '') +
          ((choice.message as { content?: string } | undefined)?.content ?? '');
    };
    try {
      const response = await undiciRequest(`${engine}${PATHS[options.endpoint]}`, {
        method: 'POST',
        dispatcher: this.agent,
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
        ...(options.requestTimeoutMs ? { signal: AbortSignal.timeout(options.requestTimeoutMs) } : {}),
      });
      if (response.statusCode !== 200) {
        await response.body.dump();
        return outcome(`http_${response.statusCode}`);
      }
      if (!options.stream) {
        take((await response.body.json()) as Record<string, unknown>);
        return outcome(undefined);
      }
      let failure: string | undefined;
      let done = false;
      const parser = new SseParser(
        (event: SseEvent) => {
          if (failure !== undefined) return;
          if (event.data === '[DONE]') {
            done = true;
            return;
          }
          const payload = JSON.parse(event.data) as Record<string, unknown>;
          // vLLM reports an error after a 200 as an event with `error` (then [DONE]).
          if (payload.error !== undefined) failure = 'error_event';
          if (ttftMs === undefined) ttftMs = event.receivedAtMs - started;
          else gapsMs.push(event.receivedAtMs - lastEventMs);
          lastEventMs = event.receivedAtMs;
          take(payload);
        },
        () => {
          failure = 'parse';
        },
      );
      for await (const chunk of response.body) {
        try {
          parser.push(chunk as Buffer, performance.now());
        } catch {
          failure = 'parse';
        }
        if (failure !== undefined) {
          response.body.destroy();
          break;
        }
      }
      return outcome(failure ?? (done ? undefined : 'stream_interrupted'));
    } catch (error) {
      const kind =
        (error as Error).name === 'TimeoutError' ? 'timeout_total' : ((error as { code?: string }).code ?? 'other');
      return outcome(kind);
    }
  }

  stats(): undefined {
    return undefined;
  }

  close(): Promise<void> {
    return this.agent.destroy();
  }
}
