import { randomUUID } from 'node:crypto';
import { EngineRequest, type RequestSink, Sequence } from './engine.js';
import { drawOutputLength, promptLengthKey, type ResolvedOutputLengths } from './output-lengths.js';
import { type GenerationJob, ResponseFormatter, type StreamProgress } from './protocol.js';

/** A request ready for the engine, with what its sink needs to format the response. */
export interface Generation {
  engineRequest: EngineRequest;
  formatter: ResponseFormatter;
  promptIndexOf: Map<Sequence, number>;
}

/**
 * Builds the sequences of a validated job (prompt p, choice i uses seed + i) and its engine request. The response
 * id is `<prefix>-<X-Request-Id header, else the body's request_id, else a random uuid hex>`, as vLLM's
 * `_base_request_id` makes it.
 */
export function createGeneration(
  job: GenerationJob,
  idPrefix: string,
  model: string,
  vocabSize: number,
  sink: RequestSink,
  arrivedAtMs: number,
  requestIdHeader?: string,
  outputLengths: ResolvedOutputLengths = { distribution: 'max-tokens' },
): Generation {
  const id = `${idPrefix}-${requestIdHeader || job.requestId || randomUUID().replaceAll('-', '')}`;
  const formatter = new ResponseFormatter(job, id, model, vocabSize);
  const sequences: Sequence[] = [];
  const promptIndexOf = new Map<Sequence, number>();
  job.prompts.forEach((prompt, promptIndex) => {
    const lengthKey = promptLengthKey(outputLengths, prompt);
    for (let choice = 0; choice < job.n; choice++) {
      const maxTokens = job.maxTokensPerPrompt[promptIndex] ?? job.maxTokens;
      const naturalLength = drawOutputLength(outputLengths, lengthKey, job.requestSeed, choice);
      const sequence = new Sequence(
        choice,
        job.seed + choice,
        prompt,
        maxTokens,
        vocabSize,
        job.stopOptions,
        naturalLength,
      );
      sequences.push(sequence);
      promptIndexOf.set(sequence, promptIndex);
    }
  });
  const promptTokens = Math.max(...job.prompts.map((prompt) => prompt.length));
  const engineRequest = new EngineRequest(
    formatter.id,
    sequences,
    promptTokens,
    job.logprobs !== undefined,
    sink,
    arrivedAtMs,
  );
  return { engineRequest, formatter, promptIndexOf };
}

/** Turns engine progress into SSE frames: each sequence's unsent tokens and text, and its finish reason once. */
export class StreamAssembler {
  private readonly progress = new Map<Sequence, StreamProgress>();
  private readonly finishSent = new Set<Sequence>();
  private opened = false;

  constructor(private readonly generation: Generation) {}

  /** Frames for everything produced since the last call. */
  drain(): string {
    const { engineRequest, formatter, promptIndexOf } = this.generation;
    let frames = '';
    if (!this.opened) {
      this.opened = true;
      frames += formatter.openingEvents();
    }
    const hold = formatter.stopBufferLength;
    for (const sequence of engineRequest.sequences) {
      let progress = this.progress.get(sequence);
      if (!progress) {
        progress = { tokens: 0, textChars: 0, textOffset: 0, echoed: false };
        this.progress.set(sequence, progress);
      }
      const to = sequence.tokenIds.length;
      const finished = sequence.finishReason !== undefined;
      if (progress.tokens === to && (!finished || this.finishSent.has(sequence))) continue;
      // While a stop string may still complete, its first characters are held back (vLLM's stop_buffer_length).
      const text = sequence.state.text;
      const textTo = finished ? text.length : Math.max(progress.textChars, text.length - hold);
      frames += formatter.streamEvent(sequence, promptIndexOf.get(sequence)!, progress.tokens, to, progress, textTo);
      progress.tokens = to;
      progress.textChars = textTo;
      if (finished) this.finishSent.add(sequence);
    }
    return frames;
  }

  /** The last frames: remaining tokens, the usage chunk when asked, and `[DONE]`. */
  finish(): string {
    const { engineRequest, formatter } = this.generation;
    let frames = this.drain();
    if (formatter.job.includeUsage) frames += formatter.usageEvent(engineRequest);
    return `${frames}data: [DONE]\n\n`;
  }

  /** Whether every sequence has finished (the last tokens then go out with `[DONE]` in one write). */
  allFinished(): boolean {
    return this.generation.engineRequest.sequences.every((sequence) => sequence.finishReason !== undefined);
  }
}
