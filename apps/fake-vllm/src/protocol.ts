import { createHash } from 'node:crypto';
import type { EngineRequest, Sequence } from './engine.js';
import {
  checkImageCount,
  featuresOf,
  type ImageItem,
  imageTokenId,
  type MultiModalCache,
  type MultiModalFeatures,
  type PlaceholderRange,
  parseContentPart,
  parseFeatures,
} from './multimodal.js';
import { checkBatchSize, checkPromptText, checkRequestSize } from './request-bounds.js';
import {
  CONTEXT_WINDOW,
  detokenize,
  eosTokenId,
  isEndOfSequence,
  logprobEntries,
  logprobTokenText,
  MAX_LOGPROBS,
  nextTokenId,
  type RankedToken,
  rankedCandidates,
  type StopOptions,
  tokenize,
} from './tokens.js';

/** An HTTP error in vLLM's shape: `{"error":{"message","type","param","code"}}`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = status === 404 ? 'NotFoundError' : 'BadRequestError',
    readonly param: string | null = null,
  ) {
    super(message);
  }

  /** JSON body as vLLM sends it. */
  body(): string {
    return JSON.stringify({ error: { message: this.message, type: this.type, param: this.param, code: this.status } });
  }
}

type Json = Record<string, unknown>;

/** Python's `repr()` of a parsed JSON value: vLLM's validation messages quote request bodies this way. */
export function pythonRepr(value: unknown): string {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : pythonFloat(value);
  if (typeof value === 'string') {
    const quote = value.includes("'") && !value.includes('"') ? '"' : "'";
    let out = quote;
    for (const char of value) {
      if (char === '\\') out += '\\\\';
      else if (char === quote) out += `\\${quote}`;
      else if (char === '\n') out += '\\n';
      else if (char === '\r') out += '\\r';
      else if (char === '\t') out += '\\t';
      else if (char < ' ' || char === '\x7f') out += `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`;
      else out += char;
    }
    return out + quote;
  }
  if (Array.isArray(value)) return `[${value.map(pythonRepr).join(', ')}]`;
  if (typeof value === 'object') {
    const entries = Object.entries(value as Json).map(([key, item]) => `${pythonRepr(key)}: ${pythonRepr(item)}`);
    return `{${entries.join(', ')}}`;
  }
  return String(value);
}

/** Python's `repr(float(x))`: `-1.0`, `0.5`, `1e-07`. Pydantic serializes floats the same way. */
export function pythonFloat(value: number): string {
  if (Number.isInteger(value) && Math.abs(value) < 1e16) return Object.is(value, -0) ? '-0.0' : `${value}.0`;
  return String(value).replace(/e([+-])(\d)$/, 'e$10$2');
}

/** A float as pydantic writes it into JSON (integral floats keep `.0`), floored at vLLM's -9999. */
function logprobJson(value: number): string {
  return pythonFloat(Math.max(value, -9999));
}

/** One pydantic error entry, as FastAPI's `RequestValidationError.errors()` holds it. */
/** One entry of pydantic's `exc.errors()`. */
export interface ValidationEntry {
  type: string;
  loc: readonly (string | number)[];
  msg: string;
  input: unknown;
  /** `ctx.error`: the repr of the exception a validator raised. */
  ctxError?: string;
  /** The whole `ctx` repr, for errors whose context is not an exception (`literal_error`: `{'expected': ...}`). */
  ctx?: string;
}

function entryRepr(entry: ValidationEntry): string {
  const loc = entry.loc.length === 1 ? `(${pythonRepr(entry.loc[0])},)` : `(${entry.loc.map(pythonRepr).join(', ')})`;
  const ctx =
    entry.ctx !== undefined
      ? `, 'ctx': ${entry.ctx}`
      : entry.ctxError === undefined
        ? ''
        : `, 'ctx': {'error': ${entry.ctxError}}`;
  return `{'type': ${pythonRepr(entry.type)}, 'loc': ${loc}, 'msg': ${pythonRepr(entry.msg)}, 'input': ${pythonRepr(entry.input)}${ctx}}`;
}

/**
 * vLLM's 400 for a request pydantic rejects (`openai/server_utils.py` validation_exception_handler): type
 * `"Bad Request"`, message `str(exc) + " " + str(exc.errors())`, `param` from the `VLLMValidationError` if one
 * was raised. Never 422.
 */
export function requestValidationError(entries: ValidationEntry[], param: string | null = null): HttpError {
  const reprs = entries.map(entryRepr);
  const count = `${entries.length} validation error${entries.length === 1 ? '' : 's'}:\n`;
  const message = `${count}${reprs.map((repr) => `  ${repr}`).join('\n')} [${reprs.join(', ')}]`;
  return new HttpError(400, message, 'Bad Request', param);
}

/** The error a request model gives a body that is not a JSON object (pydantic's `model_attributes_type`). */
function notAnObjectError(body: unknown): HttpError {
  return requestValidationError([
    {
      type: 'model_attributes_type',
      loc: ['body'],
      msg: 'Input should be a valid dictionary or object to extract fields from',
      input: body,
    },
  ]);
}

/** `str(VLLMValidationError)`: the message, then `(parameter=…, value=…)` when set (`vllm/exceptions.py`). */
function vllmMessage(message: string, parameter?: string, value?: unknown): string {
  const extras: string[] = [];
  if (parameter !== undefined) extras.push(`parameter=${parameter}`);
  if (value !== undefined && value !== null) {
    extras.push(`value=${typeof value === 'number' && !Number.isInteger(value) ? pythonFloat(value) : String(value)}`);
  }
  return extras.length > 0 ? `${message} (${extras.join(', ')})` : message;
}

/** A `VLLMValidationError` raised by a pydantic "before" validator of the request model. */
function validatorError(message: string, body: unknown, parameter?: string, value?: unknown): HttpError {
  const text = vllmMessage(message, parameter, value);
  return requestValidationError(
    [
      {
        type: 'value_error',
        loc: ['body'],
        msg: `Value error, ${text}`,
        input: body,
        ctxError: `VLLMValidationError(${pythonRepr(message)})`,
      },
    ],
    parameter ?? null,
  );
}

/** A ValueError / `VLLMValidationError` raised while serving: 400 `BadRequestError` (`entrypoints/utils.py`). */
function valueError(message: string, parameter?: string, value?: unknown): HttpError {
  return new HttpError(400, vllmMessage(message, parameter, value), 'BadRequestError', parameter ?? null);
}

/**
 * vLLM's content-type dependency (`validate_json_request`): anything but `application/json` is a
 * `RequestValidationError`, so a 400 "Bad Request" with this exact message.
 */
export function checkJsonContentType(contentType: string | undefined): void {
  const mediaType = (contentType ?? '').toLowerCase().split(';', 1)[0];
  if (mediaType === 'application/json') return;
  const text = "Unsupported Media Type: Only 'application/json' is allowed";
  throw new HttpError(400, `1 validation error:\n  ${text} [${pythonRepr(text)}]`, 'Bad Request', null);
}

/** FastAPI's answer to a body that is not JSON. */
export function invalidJsonError(detail: string): HttpError {
  return requestValidationError([
    { type: 'json_invalid', loc: ['body', 0], msg: 'JSON decode error', input: {}, ctxError: pythonRepr(detail) },
  ]);
}

/** Which endpoint a generation came through: decides every byte of the response. */
export type GenerationKind = 'completion' | 'chat' | 'generate';

/** A generation request after validation, independent of the endpoint's field names. */
export interface GenerationJob {
  kind: GenerationKind;
  /** One entry per prompt (completions accept a batch). */
  prompts: number[][];
  /** The prompt text `echo` returns (the string given, or the detokenized ids; "" with `return_token_ids`). */
  promptTexts: string[];
  n: number;
  /** The largest `max_tokens` of any prompt (what request bounds are checked against). */
  maxTokens: number;
  /** `max_tokens` per prompt: vLLM resolves it per prompt (`get_max_tokens`). */
  maxTokensPerPrompt: number[];
  /** Base seed of the request; sequence i of a prompt uses `seed + i`. */
  seed: number;
  /** The request's own `seed` field; undefined when it sent none (then `seed` is the engine's). */
  requestSeed: number | undefined;
  stream: boolean;
  includeUsage: boolean;
  /** `stream_options.continuous_usage_stats`: usage on every chunk. */
  continuousUsage: boolean;
  /** Sample logprobs: completions `logprobs`, chat `top_logprobs` (0 when only `logprobs: true`); undefined when off. */
  logprobs: number | undefined;
  /** Prompt logprobs (k), or undefined. */
  promptLogprobs: number | undefined;
  returnTokenIds: boolean;
  returnTokensAsTokenIds: boolean;
  /** Completions `echo` (chat: the last assistant message is prepended). */
  echo: boolean;
  /** `echo` with `max_tokens: 0`: the prompt alone is returned (vLLM still generates one token, and counts it). */
  echoOnly: boolean;
  /** The request's own `request_id`, used in the response id unless `X-Request-Id` is sent. */
  requestId: string | undefined;
  stopOptions: StopOptions;
  /** Per-token EOS probability of the engine (prompt logprobs rank EOS where the engine would emit it). */
  eosProbability: number;
  /**
   * An error vLLM's engine raises only once the request is submitted (out-of-vocabulary ids, too many logprobs):
   * a 400 when not streamed, but a 200 stream with one error event and `[DONE]` when streamed
   * (`openai/completion/serving.py` completion_stream_generator's `except`).
   */
  engineError: HttpError | undefined;
  /**
   * The prompt's images (`MultiModalFeatures`): rendered from chat content parts, or sent to
   * `/inference/v1/generate`; null or absent for text-only prompts.
   */
  features?: MultiModalFeatures | null;
}

/** Engine-side facts the parser needs. */
export interface ParseContext {
  model: string;
  maxModelLen: number;
  vocabSize: number;
  seed: number;
  /** Most generated tokens (prompts x n x max_tokens) one request may ask for. @default 16777216 */
  maxRequestTokens?: number;
  /** @default 0 */
  eosProbability?: number;
  /** LoRA adapters loaded at run time (`/v1/load_lora_adapter`): also valid as `model`. @default none */
  loraNames?: { has(name: string): boolean };
  /** The engine's multimodal cache: items a request may name by hash alone (`kwargs_data` null). @default none */
  mmCache?: MultiModalCache;
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isTokenArray(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((token) => Number.isInteger(token));
}

const TYPE_MESSAGES = {
  int: ['int_type', 'Input should be a valid integer'],
  float: ['float_type', 'Input should be a valid number'],
  bool: ['bool_type', 'Input should be a valid boolean'],
  string: ['string_type', 'Input should be a valid string'],
  list: ['list_type', 'Input should be a valid list'],
  dict: ['dict_type', 'Input should be a valid dictionary'],
} as const;

/** Reads an optional field of one pydantic type; null and absent are `undefined` (vLLM's `X | None = None`). */
function field(
  source: Json,
  name: string,
  type: keyof typeof TYPE_MESSAGES,
  loc: readonly string[] = ['body'],
): unknown {
  const value = source[name];
  if (value === undefined || value === null) return undefined;
  const ok =
    type === 'int'
      ? typeof value === 'number' && Number.isInteger(value)
      : type === 'float'
        ? typeof value === 'number'
        : type === 'bool'
          ? typeof value === 'boolean'
          : type === 'string'
            ? typeof value === 'string'
            : type === 'list'
              ? Array.isArray(value)
              : isObject(value);
  if (!ok) {
    const [kind, msg] = TYPE_MESSAGES[type];
    throw requestValidationError([{ type: kind, loc: [...loc, name], msg, input: value }]);
  }
  return value;
}

function checkModel(body: Json, context: ParseContext): void {
  const model = field(body, 'model', 'string');
  if (model === undefined) return;
  if (model !== context.model && !context.loraNames?.has(model as string)) {
    throw new HttpError(404, `The model \`${String(model)}\` does not exist.`, 'NotFoundError', 'model');
  }
}

/** The engine's input check (`vllm/v1/engine/input_processor.py`): the largest id must be in the vocabulary. */
function outOfVocabulary(prompts: readonly number[][], context: ParseContext): HttpError | undefined {
  for (const prompt of prompts) {
    let largest = 0;
    let smallest = 0;
    for (const token of prompt) {
      if (token > largest) largest = token;
      if (token < smallest) smallest = token;
    }
    if (smallest < 0) return valueError(`Token id ${smallest} is out of vocabulary`);
    if (largest > context.vocabSize - 1) return valueError(`Token id ${largest} is out of vocabulary`);
  }
  return undefined;
}

/**
 * The renderer's prompt-length check (`vllm/renderers/params.py`, `param: "input_tokens"`): the prompt plus the
 * requested output must fit `max_model_len`. A text prompt is tokenized only up to one token past the limit,
 * hence "at least".
 */
function checkContextLength(promptLength: number, requestedOutput: number, fromText: boolean, context: ParseContext) {
  const maxInput = context.maxModelLen - requestedOutput;
  if (promptLength <= maxInput) return;
  const reported = fromText ? Math.max(0, maxInput) + 1 : promptLength;
  throw valueError(
    `This model's maximum context length is ${context.maxModelLen} tokens. However, you requested ${requestedOutput} output tokens and your prompt contains at least ${reported} input tokens, for a total of at least ${reported + requestedOutput} tokens. Please reduce the length of the input prompt or the number of requested output tokens.`,
    'input_tokens',
    reported,
  );
}

/** The sampling fields every endpoint shares, typed as vLLM's request model types them. */
interface SamplingFields {
  n: unknown;
  temperature: unknown;
  top_p: unknown;
  top_k: unknown;
  min_p: unknown;
  presence_penalty: unknown;
  frequency_penalty: unknown;
  repetition_penalty: unknown;
  min_tokens: unknown;
  stop: unknown;
  stop_token_ids: unknown;
  ignore_eos: unknown;
  include_stop_str_in_output: unknown;
  seed: unknown;
}

function readSampling(source: Json, loc: readonly string[]): SamplingFields {
  const stop = source.stop;
  if (stop !== undefined && stop !== null && typeof stop !== 'string') {
    if (!Array.isArray(stop) || !stop.every((item) => typeof item === 'string')) {
      throw requestValidationError([
        { type: 'list_type', loc: [...loc, 'stop'], msg: 'Input should be a valid list', input: stop },
      ]);
    }
  }
  const stopTokenIds = field(source, 'stop_token_ids', 'list', loc);
  if (stopTokenIds !== undefined && !isTokenArray(stopTokenIds)) {
    throw requestValidationError([
      {
        type: 'int_type',
        loc: [...loc, 'stop_token_ids'],
        msg: 'Input should be a valid integer',
        input: stopTokenIds,
      },
    ]);
  }
  return {
    n: field(source, 'n', 'int', loc),
    temperature: field(source, 'temperature', 'float', loc),
    top_p: field(source, 'top_p', 'float', loc),
    top_k: field(source, 'top_k', 'int', loc),
    min_p: field(source, 'min_p', 'float', loc),
    presence_penalty: field(source, 'presence_penalty', 'float', loc),
    frequency_penalty: field(source, 'frequency_penalty', 'float', loc),
    repetition_penalty: field(source, 'repetition_penalty', 'float', loc),
    min_tokens: field(source, 'min_tokens', 'int', loc),
    stop: stop ?? undefined,
    stop_token_ids: stopTokenIds,
    ignore_eos: field(source, 'ignore_eos', 'bool', loc),
    include_stop_str_in_output: field(source, 'include_stop_str_in_output', 'bool', loc),
    seed: field(source, 'seed', 'int', loc),
  };
}

/** What {@link validateSampling} hands back: the knobs the fake engine uses. */
interface ResolvedSampling {
  n: number;
  seed: number | undefined;
  stopOptions: StopOptions;
}

/**
 * `SamplingParams.__post_init__` / `_verify_args` / `_verify_greedy_sampling` (`vllm/sampling_params.py`), in
 * vLLM's order and words. `fail` builds the error: a served `VLLMValidationError` for the OpenAI endpoints, a
 * pydantic error for `/inference/v1/generate` (whose body holds a `SamplingParams`).
 */
function validateSampling(
  fields: SamplingFields,
  maxTokens: number | undefined,
  fail: (message: string, parameter?: string, value?: unknown) => HttpError,
): ResolvedSampling {
  const num = (value: unknown, fallback: number) => (typeof value === 'number' ? value : fallback);
  const n = num(fields.n, 1);
  const temperature = num(fields.temperature, 1);
  const topP = num(fields.top_p, 1);
  const topK = num(fields.top_k, 0);
  const minP = num(fields.min_p, 0);
  const presence = num(fields.presence_penalty, 0);
  const frequency = num(fields.frequency_penalty, 0);
  const repetition = num(fields.repetition_penalty, 1);
  const minTokens = num(fields.min_tokens, 0);
  const stop = typeof fields.stop === 'string' ? [fields.stop] : ((fields.stop as string[] | undefined) ?? []);
  const f = pythonFloat;
  if (n < 1) throw fail(`n must be at least 1, got ${n}.`);
  if (n > 16_384) {
    throw fail(
      `n must be at most 16384, got ${n}. To increase this limit, set the VLLM_MAX_N_SEQUENCES environment variable.`,
    );
  }
  if (presence < -2 || presence > 2) throw fail(`presence_penalty must be in [-2, 2], got ${f(presence)}.`);
  if (frequency < -2 || frequency > 2) throw fail(`frequency_penalty must be in [-2, 2], got ${f(frequency)}.`);
  if (repetition <= 0) throw fail(`repetition_penalty must be greater than zero, got ${f(repetition)}.`);
  if (temperature < 0)
    throw fail(`temperature must be non-negative, got ${f(temperature)}.`, 'temperature', f(temperature));
  if (temperature > 2)
    throw fail(`temperature must be in [0, 2], got ${f(temperature)}.`, 'temperature', f(temperature));
  if (!(topP > 0 && topP <= 1)) throw fail(`top_p must be in (0, 1], got ${f(topP)}.`, 'top_p', f(topP));
  if (topK < -1) throw fail(`top_k must be 0 (disable), or at least 1, got ${topK}.`);
  if (minP < 0 || minP > 1) throw fail(`min_p must be in [0, 1], got ${f(minP)}.`);
  if (maxTokens !== undefined && maxTokens < 1) {
    throw fail(`max_tokens must be at least 1, got ${maxTokens}.`, 'max_tokens', maxTokens);
  }
  if (minTokens < 0) throw fail(`min_tokens must be greater than or equal to 0, got ${minTokens}.`);
  if (maxTokens !== undefined && minTokens > maxTokens) {
    throw fail(`min_tokens must be less than or equal to max_tokens=${maxTokens}, got ${minTokens}.`);
  }
  if (stop.some((item) => item === '')) throw fail('stop cannot contain an empty string.');
  // Zero temperature is greedy sampling: vLLM refuses n > 1 there (every sample would be the same).
  if (temperature < 1e-5 && n > 1) throw fail(`n must be 1 when using greedy sampling, got ${n}.`);
  return {
    n,
    seed: fields.seed === -1 ? undefined : (fields.seed as number | undefined),
    stopOptions: {
      stop,
      stopTokenIds: [...new Set((fields.stop_token_ids as number[] | undefined) ?? [])],
      ignoreEos: fields.ignore_eos === true,
      minTokens,
      includeStopStrInOutput: fields.include_stop_str_in_output === true,
    },
  };
}

/** The engine's logprob cap (`SamplingParams._validate_logprobs`, `--max-logprobs` 20; -1 means the vocabulary). */
function logprobsLimit(sample: number | undefined, prompt: number | undefined, context: ParseContext) {
  const sampleCount = sample === -1 ? context.vocabSize : sample;
  if (sampleCount !== undefined && sampleCount > MAX_LOGPROBS) {
    return valueError(
      `Requested sample logprobs of ${sampleCount}, which is greater than max allowed: ${MAX_LOGPROBS}`,
      'logprobs',
      sampleCount,
    );
  }
  const promptCount = prompt === -1 ? context.vocabSize : prompt;
  if (promptCount !== undefined && promptCount > MAX_LOGPROBS) {
    return valueError(
      `Requested prompt logprobs of ${promptCount}, which is greater than max allowed: ${MAX_LOGPROBS}`,
      'prompt_logprobs',
      promptCount,
    );
  }
  return undefined;
}

function streamFlags(body: Json): { stream: boolean; includeUsage: boolean; continuousUsage: boolean } {
  const stream = field(body, 'stream', 'bool') === true;
  const options = field(body, 'stream_options', 'dict') as Json | undefined;
  const includeUsage = options?.include_usage === true;
  return { stream, includeUsage, continuousUsage: includeUsage && options?.continuous_usage_stats === true };
}

/** `validate_stream_options` of both OpenAI request models. */
function checkStreamOptions(body: Json): void {
  const options = body.stream_options;
  if (options !== undefined && options !== null && !(isObject(options) && Object.keys(options).length === 0)) {
    if (body.stream !== true) {
      throw validatorError('Stream options can only be defined when `stream=True`.', body, 'stream_options');
    }
  }
}

/** The prompt_logprobs part of `check_logprobs` (both OpenAI request models). */
function checkPromptLogprobs(body: Json): void {
  const promptLogprobs = body.prompt_logprobs;
  if (promptLogprobs === undefined || promptLogprobs === null) return;
  if (typeof promptLogprobs !== 'number') {
    throw validatorError('`prompt_logprobs` must be an integer.', body, 'prompt_logprobs', promptLogprobs);
  }
  if (body.stream === true && (promptLogprobs > 0 || promptLogprobs === -1)) {
    throw validatorError('`prompt_logprobs` are not available when `stream=True`.', body, 'prompt_logprobs');
  }
  if (promptLogprobs < 0 && promptLogprobs !== -1) {
    throw validatorError('`prompt_logprobs` must be a positive value or -1.', body, 'prompt_logprobs', promptLogprobs);
  }
}

/** What every endpoint's parser decides; the rest of a {@link GenerationJob} has defaults. */
type JobFields = Pick<
  GenerationJob,
  | 'prompts'
  | 'promptTexts'
  | 'n'
  | 'maxTokens'
  | 'maxTokensPerPrompt'
  | 'seed'
  | 'requestSeed'
  | 'stream'
  | 'includeUsage'
  | 'continuousUsage'
  | 'logprobs'
  | 'promptLogprobs'
  | 'returnTokenIds'
  | 'requestId'
  | 'stopOptions'
> &
  Partial<Pick<GenerationJob, 'returnTokensAsTokenIds' | 'echo' | 'echoOnly' | 'engineError' | 'features'>>;

/**
 * Every job is built by this one literal, each field in the same order: the formatter reads the job on every
 * streamed event, and jobs of one shape keep those reads monomorphic. Built by spreading partial objects, each job
 * had a map of its own and every read missed V8's inline caches (~5% of the server's CPU at 10,000 streams).
 */
function newJob(kind: GenerationKind, context: ParseContext, fields: JobFields): GenerationJob {
  return {
    kind,
    prompts: fields.prompts,
    promptTexts: fields.promptTexts,
    n: fields.n,
    maxTokens: fields.maxTokens,
    maxTokensPerPrompt: fields.maxTokensPerPrompt,
    seed: fields.seed,
    requestSeed: fields.requestSeed,
    stream: fields.stream,
    includeUsage: fields.includeUsage,
    continuousUsage: fields.continuousUsage,
    logprobs: fields.logprobs,
    promptLogprobs: fields.promptLogprobs,
    returnTokenIds: fields.returnTokenIds,
    returnTokensAsTokenIds: fields.returnTokensAsTokenIds ?? false,
    echo: fields.echo ?? false,
    echoOnly: fields.echoOnly ?? false,
    requestId: fields.requestId,
    stopOptions: fields.stopOptions,
    eosProbability: context.eosProbability ?? 0,
    engineError: fields.engineError,
    features: fields.features ?? null,
  };
}

/** Holds the request to the work bounds (n, sequences, generated tokens) before anything is allocated for it. */
function withinBounds(job: GenerationJob, context: ParseContext): GenerationJob {
  checkRequestSize(job.prompts.length, job.n, job.maxTokens, context.maxRequestTokens);
  return job;
}

/** Validates a `/v1/completions` body (`openai/completion/protocol.py` + `serving.py`). */
export function parseCompletionRequest(body: unknown, context: ParseContext): GenerationJob {
  if (!isObject(body)) throw notAnObjectError(body);
  // The request model's "before" validators.
  const logprobsField = body.logprobs;
  if (logprobsField !== undefined && logprobsField !== null && typeof logprobsField !== 'number') {
    throw validatorError('`logprobs` must be an integer.', body, 'logprobs', logprobsField);
  }
  checkPromptLogprobs(body);
  if (typeof logprobsField === 'number' && logprobsField < 0 && logprobsField !== -1) {
    throw validatorError('`logprobs` must be a positive value or -1.', body, 'logprobs', logprobsField);
  }
  checkStreamOptions(body);
  const prompt = body.prompt;
  if (prompt === undefined || prompt === null || prompt === '') {
    throw validatorError('Either prompt or prompt_embeds must be provided and non-empty.', body, 'prompt');
  }
  // Field types.
  const requestedMaxTokens = field(body, 'max_tokens', 'int') as number | undefined;
  const sampling = readSampling(body, ['body']);
  const echo = field(body, 'echo', 'bool') === true;
  const returnTokenIds = field(body, 'return_token_ids', 'bool') === true;
  const flags = streamFlags(body);
  const requestId = field(body, 'request_id', 'string') as string | undefined;
  let texts: (string | undefined)[];
  let prompts: number[][];
  if (Array.isArray(prompt) && typeof prompt[0] !== 'number') checkBatchSize(prompt);
  const tokenizeText = (text: string) =>
    tokenize(checkPromptText(text, context.maxModelLen, body.max_tokens), context.vocabSize);
  if (typeof prompt === 'string') {
    texts = [prompt];
    prompts = [tokenizeText(prompt)];
  } else if (isTokenArray(prompt) && prompt.length > 0) {
    texts = [undefined];
    prompts = [prompt];
  } else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((item) => typeof item === 'string')) {
    texts = prompt as string[];
    prompts = texts.map((item) => tokenizeText(item as string));
  } else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every(isTokenArray)) {
    texts = prompt.map(() => undefined);
    prompts = prompt as number[][];
  } else {
    throw requestValidationError([
      {
        type: 'string_type',
        loc: ['body', 'prompt', 'str'],
        msg: 'Input should be a valid string',
        input: prompt,
      },
    ]);
  }
  checkModel(body, context);
  // Rendering: each prompt must leave room for the requested output (vLLM's default is 16).
  const outputForCheck = requestedMaxTokens ?? 16;
  prompts.forEach((tokens, index) => {
    checkContextLength(tokens.length, Math.max(0, outputForCheck), texts[index] !== undefined, context);
  });
  // SamplingParams, per prompt: max_tokens = min(rest of the context, requested); echo with 0 generates 1.
  const echoOnly = echo && requestedMaxTokens === 0;
  const maxTokensPerPrompt = prompts.map((tokens) => {
    const fit = Math.min(context.maxModelLen - tokens.length, requestedMaxTokens ?? 16);
    return echoOnly ? 1 : fit;
  });
  let resolved: ResolvedSampling | undefined;
  for (const maxTokens of maxTokensPerPrompt) resolved = validateSampling(sampling, maxTokens, valueError);
  const logprobs = logprobsField as number | undefined;
  const promptLogprobs = (body.prompt_logprobs as number | undefined) ?? (echo ? logprobs : undefined);
  const job = newJob('completion', context, {
    prompts,
    promptTexts: texts.map((text, index) =>
      returnTokenIds ? '' : (text ?? detokenize(prompts[index]!, context.vocabSize)),
    ),
    n: resolved!.n,
    maxTokens: Math.max(...maxTokensPerPrompt),
    maxTokensPerPrompt,
    seed: resolved!.seed ?? context.seed,
    requestSeed: resolved!.seed,
    ...flags,
    logprobs,
    promptLogprobs,
    returnTokenIds,
    returnTokensAsTokenIds: field(body, 'return_tokens_as_token_ids', 'bool') === true,
    echo,
    requestId,
    stopOptions: resolved!.stopOptions,
  });
  job.engineError = logprobsLimit(logprobs, promptLogprobs, context) ?? outOfVocabulary(prompts, context);
  job.echoOnly = echoOnly;
  return withinBounds(job, context);
}

/** The prompt text the toy chat template renders from messages. */
export function renderChatPrompt(messages: readonly { role: string; content: unknown }[]): string {
  let text = '';
  for (const message of messages) text += `<|${message.role}|>\n${messageText(message.content)}\n`;
  return `${text}<|assistant|>\n`;
}

/** A chat rendered for the fake model: its text (without images) and tokens with each image's placeholder run. */
export interface RenderedChat {
  text: string;
  tokens: number[];
  images: ImageItem[];
  placeholders: PlaceholderRange[];
}

/**
 * The toy chat template applied to messages whose content may hold images (`vllm/entrypoints/chat_utils.py`
 * content parts): text as {@link renderChatPrompt} renders it, and each image, where its part stands, as its run
 * of image tokens. Without images the tokens are `tokenize(renderChatPrompt(messages))`. `checkText` sees the text
 * before it is tokenized (the prompt-length bound).
 */
export function renderChatTokens(
  messages: readonly { role: string; content: unknown }[],
  vocabSize: number,
  checkText: (text: string) => void = () => {},
): RenderedChat {
  // Text segments with the images between them: segments[i] comes before images[i].
  const segments: string[] = [];
  const images: ImageItem[] = [];
  let current = '';
  messages.forEach((message, messageIndex) => {
    current += `<|${message.role}|>\n`;
    const { content } = message;
    if (typeof content === 'string') current += content;
    else if (Array.isArray(content)) {
      content.forEach((part, partIndex) => {
        const piece = parseContentPart(part, `messages[${messageIndex}].content[${partIndex}]`);
        if (piece === undefined) return;
        if ('text' in piece) {
          current += piece.text;
          return;
        }
        checkImageCount(images.length + 1);
        segments.push(current);
        images.push(piece.image);
        current = '';
      });
    }
    current += '\n';
  });
  segments.push(`${current}<|assistant|>\n`);
  const text = segments.join('');
  checkText(text);
  if (images.length === 0) return { text, tokens: tokenize(text, vocabSize), images, placeholders: [] };
  const tokens: number[] = [];
  const placeholders: PlaceholderRange[] = [];
  const imageToken = imageTokenId(vocabSize);
  segments.forEach((segment, index) => {
    for (const token of tokenize(segment, vocabSize)) tokens.push(token);
    const image = images[index];
    if (!image) return;
    placeholders.push({ offset: tokens.length, length: image.tokens });
    for (let count = 0; count < image.tokens; count++) tokens.push(imageToken);
  });
  return { text, tokens, images, placeholders };
}

function messageText(content: unknown): string {
  if (typeof content === 'string') return content;
  let text = '';
  if (Array.isArray(content)) {
    for (const part of content) if (isObject(part) && typeof part.text === 'string') text += part.text;
  }
  return text;
}

/**
 * Validates a `/v1/chat/completions` body (`openai/chat_completion/protocol.py` + `serving.py`). Its images are
 * remembered in the engine's multimodal cache unless `skipMmCache` (the render endpoint's `skip_mm_cache=True`).
 */
export function parseChatRequest(
  body: unknown,
  context: ParseContext,
  { skipMmCache = false }: { skipMmCache?: boolean } = {},
): GenerationJob {
  if (!isObject(body)) throw notAnObjectError(body);
  checkStreamOptions(body);
  // check_logprobs
  const topLogprobs = body.top_logprobs;
  if (topLogprobs !== undefined && topLogprobs !== null && typeof topLogprobs !== 'number') {
    throw validatorError('`top_logprobs` must be an integer.', body, 'top_logprobs', topLogprobs);
  }
  checkPromptLogprobs(body);
  if (typeof topLogprobs === 'number') {
    if (topLogprobs < 0 && topLogprobs !== -1) {
      throw validatorError('`top_logprobs` must be a positive value or -1.', body, 'top_logprobs', topLogprobs);
    }
    if ((topLogprobs === -1 || topLogprobs > 0) && body.logprobs !== true) {
      throw validatorError('when using `top_logprobs`, `logprobs` must be set to true.', body, 'top_logprobs');
    }
  }
  const messages = body.messages;
  if (!Array.isArray(messages) || !messages.every((m) => isObject(m) && typeof m.role === 'string')) {
    throw requestValidationError([
      { type: 'list_type', loc: ['body', 'messages'], msg: 'Input should be a valid list', input: messages },
    ]);
  }
  const maxCompletionTokens = field(body, 'max_completion_tokens', 'int') as number | undefined;
  const maxTokensField = field(body, 'max_tokens', 'int') as number | undefined;
  const requested = maxCompletionTokens ?? maxTokensField;
  const sampling = readSampling(body, ['body']);
  const wantLogprobs = field(body, 'logprobs', 'bool') === true;
  const returnTokenIds = field(body, 'return_token_ids', 'bool') === true;
  const echo = field(body, 'echo', 'bool') === true;
  const flags = streamFlags(body);
  const requestId = field(body, 'request_id', 'string') as string | undefined;
  checkModel(body, context);
  const typed = messages as { role: string; content: unknown }[];
  const rendered = renderChatTokens(typed, context.vocabSize, (text) =>
    checkPromptText(text, context.maxModelLen, requested),
  );
  const prompts = [rendered.tokens];
  checkContextLength(prompts[0]!.length, Math.max(0, requested ?? 0), true, context);
  const fit = context.maxModelLen - prompts[0]!.length;
  const maxTokens = requested === undefined ? fit : Math.min(fit, requested);
  const resolved = validateSampling(sampling, maxTokens, valueError);
  const logprobs = wantLogprobs ? ((topLogprobs as number | undefined) ?? 0) : undefined;
  const promptLogprobs = (body.prompt_logprobs as number | undefined) ?? (echo ? logprobs : undefined);
  const last = typed[typed.length - 1];
  const job = newJob('chat', context, {
    prompts,
    // Chat echo prepends the last message when it is the assistant's (the role vLLM answers as).
    promptTexts: [echo && last?.role === 'assistant' ? messageText(last.content) : ''],
    n: resolved.n,
    maxTokens,
    maxTokensPerPrompt: [maxTokens],
    seed: resolved.seed ?? context.seed,
    requestSeed: resolved.seed,
    ...flags,
    logprobs,
    promptLogprobs,
    returnTokenIds,
    returnTokensAsTokenIds: field(body, 'return_tokens_as_token_ids', 'bool') === true,
    echo,
    requestId,
    stopOptions: resolved.stopOptions,
    features: featuresOf(rendered.images, rendered.placeholders),
  });
  job.engineError = logprobsLimit(logprobs, promptLogprobs, context);
  withinBounds(job, context);
  if (!skipMmCache) {
    rendered.images.forEach((image) => {
      context.mmCache?.put(image.hash, image.tokens);
    });
  }
  return job;
}

/** Validates an `/inference/v1/generate` body (`serve/disagg/protocol.py`, `serving.py`): tokens in, tokens out. */
export function parseGenerateRequest(body: unknown, context: ParseContext): GenerationJob {
  if (!isObject(body)) throw notAnObjectError(body);
  const missing: ValidationEntry[] = [];
  if (body.token_ids === undefined) {
    missing.push({ type: 'missing', loc: ['body', 'token_ids'], msg: 'Field required', input: body });
  }
  if (body.sampling_params === undefined) {
    missing.push({ type: 'missing', loc: ['body', 'sampling_params'], msg: 'Field required', input: body });
  }
  if (missing.length > 0) throw requestValidationError(missing);
  if (!isTokenArray(body.token_ids)) {
    throw requestValidationError([
      { type: 'list_type', loc: ['body', 'token_ids'], msg: 'Input should be a valid list', input: body.token_ids },
    ]);
  }
  const sampling = field(body, 'sampling_params', 'dict') as Json | undefined;
  if (sampling === undefined) {
    throw requestValidationError([
      { type: 'dict_type', loc: ['body', 'sampling_params'], msg: 'Input should be a valid dictionary', input: null },
    ]);
  }
  const loc = ['body', 'sampling_params'];
  const requested = field(sampling, 'max_tokens', 'int', loc) as number | undefined;
  const logprobs = field(sampling, 'logprobs', 'int', loc) as number | undefined;
  const promptLogprobs = field(sampling, 'prompt_logprobs', 'int', loc) as number | undefined;
  const fields = readSampling(sampling, loc);
  // SamplingParams is part of the request model here, so its checks are pydantic errors (type "Bad Request").
  const fail = (message: string, parameter?: string, value?: unknown) =>
    requestValidationError(
      [
        {
          type: 'value_error',
          loc,
          msg: `Value error, ${vllmMessage(message, parameter, value)}`,
          input: sampling,
          ctxError: `VLLMValidationError(${pythonRepr(message)})`,
        },
      ],
      parameter ?? null,
    );
  if (logprobs !== undefined && logprobs < 0 && logprobs !== -1) {
    throw fail(`logprobs must be non-negative or -1, got ${logprobs}.`, 'logprobs', logprobs);
  }
  if (promptLogprobs !== undefined && promptLogprobs < 0 && promptLogprobs !== -1) {
    throw fail(`prompt_logprobs must be non-negative or -1, got ${promptLogprobs}.`, 'prompt_logprobs', promptLogprobs);
  }
  const resolved = validateSampling(fields, requested ?? 16, fail);
  const flags = streamFlags(body);
  checkModel(body, context);
  const features = parseFeatures(body.features, body.token_ids, context.vocabSize, context.mmCache);
  const prompts = [body.token_ids];
  // No max_tokens: the rest of the context (serving.py); a larger one ends with "length" at max_model_len.
  const fit = Math.max(1, context.maxModelLen - body.token_ids.length);
  const maxTokens = requested === undefined ? fit : Math.min(fit, requested);
  const job = newJob('generate', context, {
    prompts,
    promptTexts: [''],
    n: resolved.n,
    maxTokens,
    maxTokensPerPrompt: [maxTokens],
    seed: resolved.seed ?? context.seed,
    requestSeed: resolved.seed,
    ...flags,
    logprobs,
    promptLogprobs,
    returnTokenIds: true,
    requestId: field(body, 'request_id', 'string') as string | undefined,
    stopOptions: resolved.stopOptions,
    features,
  });
  const emptyPrompt = body.token_ids.length === 0 ? valueError('The decoder prompt cannot be empty') : undefined;
  job.engineError =
    emptyPrompt ?? logprobsLimit(logprobs, promptLogprobs, context) ?? outOfVocabulary(prompts, context);
  if (!job.engineError && body.token_ids.length >= context.maxModelLen) {
    job.engineError = valueError(
      `The decoder prompt (length ${body.token_ids.length}) is longer than the maximum model length of ${context.maxModelLen}. Make sure that \`max_model_len\` is no smaller than the number of text tokens.`,
    );
  }
  return withinBounds(job, context);
}

const fingerprints = new Map<string, string>();

/** vLLM's `system_fingerprint`: `vllm-<version>-<8 hex of the config hash>`, fixed for a server. */
export function systemFingerprint(model: string): string {
  let fingerprint = fingerprints.get(model);
  if (!fingerprint) {
    fingerprint = `vllm-0.0.0+fake-vllm-${createHash('sha256').update(model).digest('hex').slice(0, 8)}`;
    fingerprints.set(model, fingerprint);
  }
  return fingerprint;
}

/** Python's `len()` of a string (code points), which vLLM's `text_offset` counts in. */
function pythonLength(text: string): number {
  let length = text.length;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code >= 0xd800 && code <= 0xdbff) length--;
  }
  return length;
}

function utf8Bytes(text: string): string {
  return `[${[...Buffer.from(text, 'utf8')].join(',')}]`;
}

/** Text of one sequence already sent in a stream, and how many of its tokens. */
export interface StreamProgress {
  tokens: number;
  /** Output text characters sent (UTF-16 units of `Sequence.state.text`). */
  textChars: number;
  /** Python-length of every text sent for the choice (echo included): the next chunk's first `text_offset`. */
  textOffset: number;
  echoed: boolean;
}

/** Builds every byte of one request's response, streamed or whole. */
export class ResponseFormatter {
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly prefix: string;
  private readonly head: string;
  private readonly fingerprint: string;
  /** Characters of output text held back while streaming, so a stop string is never sent and then retracted. */
  readonly stopBufferLength: number;

  constructor(
    readonly job: GenerationJob,
    readonly id: string,
    readonly model: string,
    private readonly vocabSize: number,
  ) {
    const object = job.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    this.fingerprint = systemFingerprint(model);
    // The constant head of every chunk, built once: per-token work is only the variable tail.
    this.head =
      job.kind === 'generate'
        ? `{"request_id":${JSON.stringify(id)}`
        : `{"id":${JSON.stringify(id)},"object":"${object}","created":${this.created},"model":${JSON.stringify(model)}`;
    this.prefix = `data: ${this.head},"choices":[`;
    const stop = job.stopOptions.stop ?? [];
    this.stopBufferLength =
      stop.length > 0 && !job.stopOptions.includeStopStrInOutput ? Math.max(...stop.map((item) => item.length)) - 1 : 0;
  }

  /** Index of a sequence in `choices` (completions number choices across a prompt batch). */
  private choiceIndex(sequence: Sequence, promptIndex: number): number {
    return promptIndex * this.job.n + sequence.index;
  }

  /** The model's ranked candidates where `sequence` emitted token `index`. */
  private rankedAt(sequence: Sequence, index: number): RankedToken[] {
    return rankedCandidates(
      sequence.seed,
      contextBefore(sequence.promptTokenIds, sequence.tokenIds, index),
      sequence.tokenIds[index]!,
      this.vocabSize,
    );
  }

  private tokenString(tokenId: number): string {
    return this.job.returnTokensAsTokenIds ? `token_id:${tokenId}` : logprobTokenText(tokenId, this.vocabSize);
  }

  /**
   * The prompt's logprob dicts (`[None, {id: Logprob}, …]`), computed with the request's seed: scoring a prompt
   * that ends with tokens this server generated gives back the logprobs it reported for them.
   */
  private promptLogprobDicts(promptIndex: number): (RankedToken[] | null)[] {
    const prompt = this.job.prompts[promptIndex]!;
    const k = this.job.promptLogprobs ?? this.job.logprobs ?? 0;
    const dicts: (RankedToken[] | null)[] = [null];
    for (let index = 1; index < prompt.length; index++) {
      const context = prompt.slice(Math.max(0, index - CONTEXT_WINDOW), index);
      const chosen = isEndOfSequence(this.job.seed, context, this.job.eosProbability)
        ? eosTokenId(this.vocabSize)
        : nextTokenId(this.job.seed, context, this.vocabSize);
      const ranked = rankedCandidates(this.job.seed, context, chosen, this.vocabSize);
      dicts.push(logprobEntries(ranked, prompt[index]!, k === -1 ? MAX_LOGPROBS : k, this.vocabSize));
    }
    return dicts;
  }

  private promptLogprobsJson(promptIndex: number): string {
    if (this.job.promptLogprobs === undefined) return 'null';
    const parts = this.promptLogprobDicts(promptIndex).map((entries) => {
      if (!entries) return 'null';
      const items = entries.map(
        (entry) =>
          `"${entry.tokenId}":{"logprob":${logprobJson(entry.logprob)},"rank":${entry.rank},"decoded_token":${JSON.stringify(logprobTokenText(entry.tokenId, this.vocabSize))}}`,
      );
      return `{${items.join(',')}}`;
    });
    return `[${parts.join(',')}]`;
  }

  /** Completions logprobs for tokens `[from, to)`, optionally preceded by the echoed prompt. */
  private completionLogprobs(
    sequence: Sequence,
    promptIndex: number,
    from: number,
    to: number,
    offset: number,
    withPrompt: boolean,
  ): string {
    const k = this.job.logprobs!;
    const tokens: string[] = [];
    const tokenLogprobs: string[] = [];
    const tops: string[] = [];
    const offsets: number[] = [];
    let position = offset;
    const push = (token: string, logprob: string, top: string) => {
      offsets.push(position);
      position += pythonLength(token);
      tokens.push(JSON.stringify(token));
      tokenLogprobs.push(logprob);
      tops.push(top);
    };
    const dictJson = (entries: RankedToken[]) =>
      `{${entries.map((entry) => `${JSON.stringify(this.tokenString(entry.tokenId))}:${logprobJson(entry.logprob)}`).join(',')}}`;
    if (withPrompt) {
      const prompt = this.job.prompts[promptIndex]!;
      const dicts = this.promptLogprobDicts(promptIndex);
      prompt.forEach((tokenId, index) => {
        const entries = dicts[index];
        if (!entries) push(this.tokenString(tokenId), 'null', 'null');
        else push(this.tokenString(tokenId), logprobJson(entries[0]!.logprob), dictJson(entries));
      });
    }
    for (let index = from; index < to; index++) {
      const tokenId = sequence.tokenIds[index]!;
      const entries = logprobEntries(
        this.rankedAt(sequence, index),
        tokenId,
        k === -1 ? MAX_LOGPROBS : k,
        this.vocabSize,
      );
      push(this.tokenString(tokenId), logprobJson(sequence.logprobs[index]!), dictJson(entries));
    }
    return `{"text_offset":[${offsets.join(',')}],"token_logprobs":[${tokenLogprobs.join(',')}],"tokens":[${tokens.join(',')}],"top_logprobs":[${tops.join(',')}]}`;
  }

  /** Chat logprobs: `{token, logprob, bytes, top_logprobs: [k entries]}` (`chat_completion/serving.py`). */
  private chatLogprobs(sequence: Sequence, from: number, to: number): string {
    const k = this.job.logprobs!;
    const content: string[] = [];
    for (let index = from; index < to; index++) {
      const tokenId = sequence.tokenIds[index]!;
      const entries = logprobEntries(
        this.rankedAt(sequence, index),
        tokenId,
        k === -1 ? MAX_LOGPROBS : k,
        this.vocabSize,
      );
      // `top_logprobs` holds the first k entries of vLLM's dict, which starts with the sampled token.
      const top = entries.slice(0, k === -1 ? entries.length : k).map((entry) => {
        const token = this.tokenString(entry.tokenId);
        return `{"token":${JSON.stringify(token)},"logprob":${logprobJson(entry.logprob)},"bytes":${utf8Bytes(token)}}`;
      });
      // The sampled token's bytes are its decoded text even when the token is shown as `token_id:N`.
      const decoded = logprobTokenText(tokenId, this.vocabSize);
      content.push(
        `{"token":${JSON.stringify(this.tokenString(tokenId))},"logprob":${logprobJson(sequence.logprobs[index]!)},"bytes":${utf8Bytes(decoded)},"top_logprobs":[${top.join(',')}]}`,
      );
    }
    return `{"content":[${content.join(',')}]}`;
  }

  /** Generate logprobs: `token_id:N` tokens, `bytes: null`, the first max(k, 1) dict entries (`disagg/serving.py`). */
  private generateLogprobs(sequence: Sequence, from: number, to: number): string {
    const k = this.job.logprobs!;
    const content: string[] = [];
    for (let index = from; index < to; index++) {
      const tokenId = sequence.tokenIds[index]!;
      const entries = logprobEntries(
        this.rankedAt(sequence, index),
        tokenId,
        k === -1 ? MAX_LOGPROBS : k,
        this.vocabSize,
      );
      const top = entries
        .slice(0, Math.max(k, 1))
        .map((entry) => `{"token":"token_id:${entry.tokenId}","logprob":${logprobJson(entry.logprob)},"bytes":null}`);
      content.push(
        `{"token":"token_id:${tokenId}","logprob":${logprobJson(sequence.logprobs[index]!)},"bytes":null,"top_logprobs":[${top.join(',')}]}`,
      );
    }
    return `{"content":[${content.join(',')}]}`;
  }

  private stopReasonJson(sequence: Sequence): string {
    return sequence.stopReason === null ? 'null' : JSON.stringify(sequence.stopReason);
  }

  private chunkUsage(promptIndex: number, completionTokens: number): string {
    const prompt = this.job.prompts[promptIndex]!.length;
    return `,"usage":{"prompt_tokens":${prompt},"total_tokens":${prompt + completionTokens},"completion_tokens":${completionTokens}}`;
  }

  /**
   * Chat streams open with one role chunk per choice, all before any content (`chat_completion/serving.py`);
   * with `return_token_ids` each carries the prompt ids; with `echo`, the echoed message follows.
   */
  openingEvents(): string {
    const job = this.job;
    if (job.kind !== 'chat') return '';
    let frames = '';
    const promptIds = job.returnTokenIds ? `[${job.prompts[0]!.join(',')}]` : 'null';
    const usage = job.continuousUsage ? this.chunkUsage(0, 0) : '';
    for (let choice = 0; choice < job.n; choice++) {
      frames += `${this.prefix}{"index":${choice},"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]${usage},"prompt_token_ids":${promptIds}}\n\n`;
    }
    const echoed = job.promptTexts[0]!;
    if (job.echo && echoed !== '') {
      for (let choice = 0; choice < job.n; choice++) {
        frames += `${this.prefix}{"index":${choice},"delta":{"content":${JSON.stringify(echoed)}},"logprobs":null,"finish_reason":null}]${usage}}\n\n`;
      }
    }
    return frames;
  }

  /**
   * One SSE event for the tokens `[from, to)` of a sequence and its text `[textFrom, textTo)`. Returns '' where
   * vLLM sends nothing (no new token yet; generate chunks without tokens).
   */
  streamEvent(
    sequence: Sequence,
    promptIndex: number,
    from: number,
    to: number,
    progress: StreamProgress,
    textTo: number,
  ): string {
    const job = this.job;
    const index = this.choiceIndex(sequence, promptIndex);
    const finished = sequence.finishReason !== undefined && to === sequence.tokenIds.length;
    const finish = finished ? `"${sequence.finishReason}"` : 'null';
    const wantLogprobs = job.logprobs !== undefined;
    const terminal = finished && !job.includeUsage ? `,"system_fingerprint":"${this.fingerprint}"` : '';
    if (job.kind === 'generate') {
      // vLLM skips an output without new tokens (`disagg/serving.py`).
      if (to === from) return '';
      const logprobs = wantLogprobs ? this.generateLogprobs(sequence, from, to) : 'null';
      const usage = job.continuousUsage ? this.chunkUsage(promptIndex, to).slice(1) : '"usage":null';
      return `${this.prefix}{"index":${index},"logprobs":${logprobs},"finish_reason":${finish},"token_ids":[${sequence.tokenIds.slice(from, to).join(',')}]}],${usage}}\n\n`;
    }
    // vLLM's "chunked prefill case": no text, no token and nothing sent before -> no chunk.
    const firstOutput = progress.tokens === 0;
    const echoNow = job.kind === 'completion' && job.echo && !progress.echoed;
    if (to === from && textTo === progress.textChars && firstOutput && !echoNow) return '';
    const outputText = sequence.state.text.slice(progress.textChars, textTo);
    const tokenIds = job.returnTokenIds ? `[${sequence.tokenIds.slice(from, to).join(',')}]` : 'null';
    const usage = job.continuousUsage ? this.chunkUsage(promptIndex, to) : '';
    if (job.kind === 'chat') {
      const logprobs = wantLogprobs ? this.chatLogprobs(sequence, from, to) : 'null';
      const stop = finished ? `,"stop_reason":${this.stopReasonJson(sequence)}` : '';
      progress.textOffset += pythonLength(outputText);
      return `${this.prefix}{"index":${index},"delta":{"content":${JSON.stringify(outputText)}},"logprobs":${logprobs},"finish_reason":${finish}${stop},"token_ids":${tokenIds}}]${usage}${terminal}}\n\n`;
    }
    let text = outputText;
    let promptIds = 'null';
    let logprobs = 'null';
    if (echoNow) {
      const promptText = job.promptTexts[promptIndex]!;
      promptIds = `[${job.prompts[promptIndex]!.join(',')}]`;
      // echo with max_tokens 0 returns only the prompt (the one token generated for it is not shown).
      if (job.echoOnly) {
        text = promptText;
        if (wantLogprobs) logprobs = this.completionLogprobs(sequence, promptIndex, 0, 0, progress.textOffset, true);
      } else {
        text = promptText + outputText;
        if (wantLogprobs)
          logprobs = this.completionLogprobs(sequence, promptIndex, from, to, progress.textOffset, true);
      }
      progress.echoed = true;
    } else {
      if (job.returnTokenIds && firstOutput) promptIds = `[${job.prompts[promptIndex]!.join(',')}]`;
      if (wantLogprobs) logprobs = this.completionLogprobs(sequence, promptIndex, from, to, progress.textOffset, false);
    }
    progress.textOffset += pythonLength(text);
    return `${this.prefix}{"index":${index},"text":${JSON.stringify(text)},"logprobs":${logprobs},"finish_reason":${finish},"stop_reason":${finished ? this.stopReasonJson(sequence) : 'null'},"prompt_token_ids":${promptIds},"token_ids":${tokenIds}}]${usage}${terminal}}\n\n`;
  }

  private usage(request: EngineRequest, withDetails: boolean): string {
    let completion = 0;
    for (const sequence of request.sequences) completion += sequence.tokenIds.length;
    let prompt = 0;
    for (const tokens of this.job.prompts) prompt += tokens.length;
    const details = withDetails ? ',"prompt_tokens_details":null' : '';
    return `{"prompt_tokens":${prompt},"total_tokens":${prompt + completion},"completion_tokens":${completion}${details}}`;
  }

  /** The usage chunk (`choices: []`, no None fields) sent before `[DONE]` when `stream_options.include_usage` is set. */
  usageEvent(request: EngineRequest): string {
    const fingerprint = this.job.kind === 'generate' ? '' : `,"system_fingerprint":"${this.fingerprint}"`;
    return `data: ${this.head},"choices":[],"usage":${this.usage(request, false)}${fingerprint}}\n\n`;
  }

  /** A vLLM mid-stream error event. */
  static errorEvent(message: string, type: string, code: number, param: string | null = null): string {
    return `data: ${JSON.stringify({ error: { message, type, param, code } })}\n\n`;
  }

  /** The whole non-streaming response body. */
  fullBody(request: EngineRequest, promptIndexOf: (sequence: Sequence) => number): string {
    const job = this.job;
    const wantLogprobs = job.logprobs !== undefined;
    const choices = request.sequences.map((sequence) => {
      const promptIndex = promptIndexOf(sequence);
      const index = this.choiceIndex(sequence, promptIndex);
      const end = sequence.tokenIds.length;
      // vLLM reports a finish reason of None as "stop" in whole responses.
      const finish = `"${sequence.finishReason ?? 'stop'}"`;
      const stop = this.stopReasonJson(sequence);
      if (job.kind === 'generate') {
        return `{"index":${index},"logprobs":${wantLogprobs ? this.generateLogprobs(sequence, 0, end) : 'null'},"finish_reason":${finish},"token_ids":[${sequence.tokenIds.join(',')}],"routed_experts":null}`;
      }
      const tokenIds = job.returnTokenIds ? `[${sequence.tokenIds.join(',')}]` : 'null';
      if (job.kind === 'chat') {
        const content = (job.echo ? job.promptTexts[0]! : '') + sequence.state.text;
        return `{"index":${index},"message":{"role":"assistant","content":${JSON.stringify(content)},"refusal":null,"annotations":null,"audio":null,"function_call":null,"reasoning":null},"logprobs":${wantLogprobs ? this.chatLogprobs(sequence, 0, end) : 'null'},"finish_reason":${finish},"stop_reason":${stop},"token_ids":${tokenIds}}`;
      }
      let text = sequence.state.text;
      let logprobs = 'null';
      if (job.echo) {
        text = job.echoOnly ? job.promptTexts[promptIndex]! : job.promptTexts[promptIndex]! + text;
        if (wantLogprobs) logprobs = this.completionLogprobs(sequence, promptIndex, 0, job.echoOnly ? 0 : end, 0, true);
      } else if (wantLogprobs) {
        logprobs = this.completionLogprobs(sequence, promptIndex, 0, end, 0, false);
      }
      const promptIds = job.returnTokenIds ? `[${job.prompts[promptIndex]!.join(',')}]` : 'null';
      return `{"index":${index},"text":${JSON.stringify(text)},"logprobs":${logprobs},"finish_reason":${finish},"stop_reason":${stop},"token_ids":${tokenIds},"prompt_logprobs":${this.promptLogprobsJson(promptIndex)},"prompt_token_ids":${promptIds}}`;
    });
    if (job.kind === 'generate') {
      return `${this.head},"choices":[${choices.join(',')}],"prompt_logprobs":${this.promptLogprobsJson(0)},"kv_transfer_params":null}`;
    }
    const object = job.kind === 'chat' ? 'chat.completion' : 'text_completion';
    const head = this.head.replace('"chat.completion.chunk"', `"${object}"`);
    const tail =
      job.kind === 'chat'
        ? `,"prompt_logprobs":${this.promptLogprobsJson(0)},"prompt_token_ids":${job.returnTokenIds ? `[${job.prompts[0]!.join(',')}]` : 'null'},"kv_transfer_params":null`
        : ',"kv_transfer_params":null';
    return `${head},"choices":[${choices.join(',')}],"service_tier":null,"system_fingerprint":"${this.fingerprint}","usage":${this.usage(request, true)}${tail}}`;
  }
}

/** The last {@link CONTEXT_WINDOW} tokens of prompt + output before output token `index`. */
function contextBefore(prompt: readonly number[], output: readonly number[], index: number): number[] {
  const context: number[] = [];
  for (let position = index - CONTEXT_WINDOW; position < index; position++) {
    if (position >= 0) context.push(output[position]!);
    else if (prompt.length + position >= 0) context.push(prompt[prompt.length + position]!);
  }
  return context;
}
