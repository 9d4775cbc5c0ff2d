import { randomUUID } from 'node:crypto';
import { EngineRequest, type RequestSink, Sequence } from './engine.js';
import { type GenerationJob, ResponseFormatter } from './protocol.js';

/** A request ready for the engine, with what its sink needs to format the response. */
export interface Generation {
  engineRequest: EngineRequest;
  formatter: ResponseFormatter;
  promptIndexOf: Map<Sequence, number>;
}

/** Builds the sequences of a validated job (prompt p, choice i uses seed + i) and its engine request. */
export function createGeneration(
  job: GenerationJob,
  idPrefix: string,
  model: string,
  vocabSize: number,
  sink: RequestSink,
  arrivedAtMs: number,
): Generation {
  const id = `${idPrefix}-${randomUUID().replaceAll('-', '')}`;
  const formatter = new ResponseFormatter(job, id, model, vocabSize);
  const sequences: Sequence[] = [];
  const promptIndexOf = new Map<Sequence, number>();
  job.prompts.forEach((prompt, promptIndex) => {
    for (let choice = 0; choice < job.n; choice++) {
      const sequence = new Sequence(choice, job.seed + choice, prompt, job.maxTokens);
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

/** Turns engine progress into SSE frames: each sequence's unsent tokens, and its finish reason once. */
export class StreamAssembler {
  private readonly sent = new Map<Sequence, number>();
  private readonly finishSent = new Set<Sequence>();

  constructor(private readonly generation: Generation) {}

  /** Frames for everything produced since the last call. */
  drain(): string {
    const { engineRequest, formatter, promptIndexOf } = this.generation;
    let frames = '';
    for (const sequence of engineRequest.sequences) {
      const from = this.sent.get(sequence) ?? -1;
      const to = sequence.tokenIds.length;
      const finished = sequence.finishReason !== undefined;
      if (from === to && (!finished || this.finishSent.has(sequence))) continue;
      frames += formatter.streamEvent(sequence, promptIndexOf.get(sequence)!, Math.max(0, from), to, from < 0);
      this.sent.set(sequence, to);
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
