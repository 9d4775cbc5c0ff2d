/**
 * Deterministic model output and a reversible toy tokenizer.
 *
 * Every next token is a pure function of a seed and the last {@link CONTEXT_WINDOW} tokens of the
 * sequence (prompt followed by what was generated). Two consequences that tests and load generators rely on:
 * a client can compute exactly what it should have received, and a generation resumed from
 * `prompt + received tokens` continues exactly as the uninterrupted one would have.
 */

/** How many preceding tokens the next token depends on. */
export const CONTEXT_WINDOW = 4;
/** Default vocabulary size, as a small Llama-style model. */
export const DEFAULT_VOCAB_SIZE = 32_000;
/** Token ids below this are raw UTF-8 bytes; the tokenizer falls back to them for text it has no word for. */
export const BYTE_TOKEN_COUNT = 256;

const CONSONANTS = 'bdfghjklmnprstvz';
const VOWELS = 'aeiou';
const SYLLABLES: string[] = [];
for (const consonant of CONSONANTS) for (const vowel of VOWELS) SYLLABLES.push(consonant + vowel);
const SYLLABLE_COUNT = SYLLABLES.length; // 80
const TWO_SYLLABLE_WORDS = SYLLABLE_COUNT * SYLLABLE_COUNT; // 6400
const SYLLABLE_INDEX = new Map(SYLLABLES.map((syllable, index) => [syllable, index]));

/** Id of the end-of-sequence token for a vocabulary size: the last id. */
export function eosTokenId(vocabSize = DEFAULT_VOCAB_SIZE): number {
  return vocabSize - 1;
}

/** murmur3's 32-bit finaliser: a cheap, well-mixed integer hash. */
export function mix32(value: number): number {
  let h = value | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hash of a seed and the last {@link CONTEXT_WINDOW} tokens of `context` (fewer when the context is shorter). */
export function contextHash(seed: number, context: ArrayLike<number>, salt = 0): number {
  let h = mix32((seed | 0) ^ Math.imul(salt + 1, 0x9e3779b1));
  const start = Math.max(0, context.length - CONTEXT_WINDOW);
  for (let index = start; index < context.length; index++) {
    h = mix32(h ^ Math.imul((context[index] as number) + 0x27d4eb2f, 0x165667b1));
  }
  return h;
}

/**
 * The token the fake model emits after `context` (prompt plus tokens generated so far) for `seed`.
 * Never returns a byte token or the EOS token (EOS is emitted only when {@link isEndOfSequence} says so).
 */
export function nextTokenId(seed: number, context: ArrayLike<number>, vocabSize = DEFAULT_VOCAB_SIZE): number {
  const wordCount = vocabSize - BYTE_TOKEN_COUNT - 1;
  return BYTE_TOKEN_COUNT + (contextHash(seed, context) % wordCount);
}

/** Whether the fake model stops after `context` when the per-token EOS probability is `eosProbability`. */
export function isEndOfSequence(seed: number, context: ArrayLike<number>, eosProbability: number): boolean {
  if (eosProbability <= 0) return false;
  return contextHash(seed, context, 1) / 0x1_0000_0000 < eosProbability;
}

/** Deterministic log-probability reported for the token chosen after `context`, in (-4, 0]. */
export function tokenLogprob(seed: number, context: ArrayLike<number>): number {
  return -((contextHash(seed, context, 2) & 0xffff) / 0x10000) * 4;
}

/** Most logprobs a request may ask for: vLLM's `--max-logprobs` default (`vllm/config/model.py`). */
export const MAX_LOGPROBS = 20;

/**
 * How a sequence stops besides `max_tokens`, as vLLM's `SamplingParams` (`stop`, `stop_token_ids`, `ignore_eos`,
 * `min_tokens`, `include_stop_str_in_output`).
 */
export interface StopOptions {
  /** @default [] */
  stop?: readonly string[];
  /** @default [] */
  stopTokenIds?: readonly number[];
  /** Never emit EOS (the word the model would have chosen comes instead). @default false */
  ignoreEos?: boolean;
  /** Neither EOS nor a stop token id ends the sequence before this many tokens. @default 0 */
  minTokens?: number;
  /** Keep the stop string, or the stop token's text, in the output text. @default false */
  includeStopStrInOutput?: boolean;
}

/** Why a sequence stopped, in vLLM's words: `stop_reason` is the stop string or stop token id, null for EOS. */
export interface StopResult {
  finishReason: 'length' | 'stop';
  stopReason: string | number | null;
}

/**
 * One sequence of the fake model, token by token: what the engine runs and what {@link expectedCompletion}
 * replays. The EOS token is emitted and counted like any token (vLLM keeps it in `token_ids`, logprobs and
 * `completion_tokens`) but adds no text; a stop token id adds its text only with `includeStopStrInOutput`; a stop
 * string cuts the text where it starts (`vllm/v1/core/sched/utils.py` check_stop, `vllm/v1/engine/detokenizer.py`).
 */
export class SequenceState {
  readonly tokenIds: number[] = [];
  /** Output text as vLLM's detokenizer holds it: stop string cut off, skipped stop token not rendered. */
  text = '';
  result: StopResult | undefined;
  private readonly window: number[];

  constructor(
    readonly seed: number,
    promptTokenIds: readonly number[],
    readonly maxTokens: number,
    readonly vocabSize: number,
    readonly stopOptions: StopOptions = {},
    /** The drawn natural length (see `OutputLengthOptions`): EOS is the token at this position. @default none */
    readonly naturalLength?: number,
  ) {
    this.window = promptTokenIds.slice(-CONTEXT_WINDOW);
  }

  /** The last {@link CONTEXT_WINDOW} tokens of prompt + output: all the next token depends on. */
  get context(): readonly number[] {
    return this.window;
  }

  /** Emits the next token and returns it (the caller reads the logprob from {@link context} first if it wants it). */
  step(eosProbability: number): number {
    const options = this.stopOptions;
    const minTokens = options.minTokens ?? 0;
    const count = this.tokenIds.length;
    // vLLM masks EOS while fewer than min_tokens were generated (min_tokens logits processor).
    const eos =
      !options.ignoreEos &&
      count >= minTokens &&
      (count + 1 === this.naturalLength || isEndOfSequence(this.seed, this.window, eosProbability));
    const token = eos ? eosTokenId(this.vocabSize) : nextTokenId(this.seed, this.window, this.vocabSize);
    this.tokenIds.push(token);
    this.window.push(token);
    if (this.window.length > CONTEXT_WINDOW) this.window.shift();
    if (eos) {
      this.result = { finishReason: 'stop', stopReason: null };
      return token;
    }
    const stopToken = this.tokenIds.length >= minTokens && (options.stopTokenIds?.includes(token) ?? false);
    if (!stopToken || options.includeStopStrInOutput) {
      const piece = generatedTokenText(token, this.vocabSize);
      this.text += piece;
      if (!stopToken && options.stop && options.stop.length > 0) this.checkStopStrings(piece.length);
      if (this.result) return token;
    }
    if (stopToken) this.result = { finishReason: 'stop', stopReason: token };
    else if (this.tokenIds.length >= this.maxTokens) this.result = { finishReason: 'length', stopReason: null };
    return token;
  }

  /** vLLM's StopChecker.check_stop_strings: the first stop string (in request order) found in the new text wins. */
  private checkStopStrings(newCharCount: number): void {
    const text = this.text;
    for (const stop of this.stopOptions.stop!) {
      const index = text.indexOf(stop, Math.max(0, text.length + 1 - newCharCount - stop.length));
      if (index === -1) continue;
      const cut = this.stopOptions.includeStopStrInOutput ? index + stop.length : index;
      this.text = text.slice(0, Math.min(cut, text.length));
      this.result = { finishReason: 'stop', stopReason: stop };
      return;
    }
  }
}

/** Options of {@link expectedCompletion}; the same knobs the server uses. */
export interface ExpectedCompletionOptions extends StopOptions {
  /** Sampling seed of the sequence (the request's `seed`, or the server's seed, plus the choice index). */
  seed: number;
  /** Tokens to generate at most. */
  maxTokens: number;
  /** @default 0 — never stop early */
  eosProbability?: number;
  /** @default 32000 */
  vocabSize?: number;
  /**
   * The sequence's natural length when the server draws lengths (`outputLengths`): what `drawOutputLength`
   * returns for the prompt, the request's seed and the choice. EOS is the token at this position. @default none
   */
  outputLength?: number;
}

/** Result of {@link expectedCompletion}. */
export interface ExpectedCompletion {
  /** Every emitted token, the EOS or stop token included (as vLLM's `token_ids`). */
  tokenIds: number[];
  /** The output text as vLLM returns it (no EOS text, stop string cut). */
  text: string;
  finishReason: 'length' | 'stop';
  /** The stop string or stop token id that ended the sequence; null for EOS and length. */
  stopReason: string | number | null;
}

/**
 * Exactly what fake-vllm generates for a prompt: use it to verify a response token by token, or to check that a
 * resumed generation equals the uninterrupted one.
 */
export function expectedCompletion(
  promptTokenIds: readonly number[],
  options: ExpectedCompletionOptions,
): ExpectedCompletion {
  const vocabSize = options.vocabSize ?? DEFAULT_VOCAB_SIZE;
  const eosProbability = options.eosProbability ?? 0;
  const state = new SequenceState(
    options.seed,
    promptTokenIds,
    options.maxTokens,
    vocabSize,
    options,
    options.outputLength,
  );
  while (!state.result && state.tokenIds.length < options.maxTokens) state.step(eosProbability);
  const result = state.result ?? { finishReason: 'length', stopReason: null };
  return { tokenIds: state.tokenIds, text: state.text, ...result };
}

/** One candidate next token with vLLM's `Logprob` fields (rank 1 is the most likely). */
export interface RankedToken {
  tokenId: number;
  logprob: number;
  rank: number;
}

const LOG_FLOOR = -9999;

/**
 * The fake model's most likely next tokens after `context` when it emits `chosen` with probability
 * `exp(tokenLogprob)`: {@link MAX_LOGPROBS} alternatives share the rest of the mass, each half the one before,
 * so every list is a valid distribution and `chosen` sits at the rank its probability earns. Best first.
 */
export function rankedCandidates(
  seed: number,
  context: ArrayLike<number>,
  chosen: number,
  vocabSize = DEFAULT_VOCAB_SIZE,
): RankedToken[] {
  const chosenLogprob = tokenLogprob(seed, context);
  const restLog = Math.log(1 - Math.exp(chosenLogprob));
  const wordCount = vocabSize - BYTE_TOKEN_COUNT - 1;
  const seen = new Set([chosen]);
  const ranked: RankedToken[] = [];
  for (let salt = 3; ranked.length < MAX_LOGPROBS; salt++) {
    const tokenId = BYTE_TOKEN_COUNT + (contextHash(seed, context, salt) % wordCount);
    if (seen.has(tokenId)) continue;
    seen.add(tokenId);
    ranked.push({ tokenId, logprob: Math.max(LOG_FLOOR, restLog - (ranked.length + 1) * Math.LN2), rank: 0 });
  }
  const position = ranked.findIndex((candidate) => chosenLogprob >= candidate.logprob);
  ranked.splice(position === -1 ? ranked.length : position, 0, { tokenId: chosen, logprob: chosenLogprob, rank: 0 });
  for (let index = 0; index < ranked.length; index++) ranked[index]!.rank = index + 1;
  return ranked;
}

/**
 * vLLM's per-position logprob dict for a token that was sampled (or, for prompt logprobs, that was given):
 * that token first with its own rank, then the top `k` in rank order without repeating it
 * (`vllm/v1/engine/logprobs.py`). Prompt tokens the model would not have ranked get the tail's share and rank
 * {@link MAX_LOGPROBS} + 2.
 */
export function logprobEntries(
  ranked: readonly RankedToken[],
  tokenId: number,
  k: number,
  vocabSize: number,
): RankedToken[] {
  let own = ranked.find((candidate) => candidate.tokenId === tokenId);
  if (!own) {
    const last = ranked[ranked.length - 1]!;
    const tail = Math.max(LOG_FLOOR, last.logprob - Math.LN2 - Math.log(Math.max(1, vocabSize - ranked.length - 1)));
    own = { tokenId, logprob: tail, rank: ranked.length + 1 };
  }
  const entries = [own];
  for (let index = 0; index < k && index < ranked.length; index++) {
    if (ranked[index]!.tokenId !== tokenId) entries.push(ranked[index]!);
  }
  return entries;
}

/**
 * A token's text as vLLM's logprobs decode it (`tokenizer.decode([id])`): the EOS token as `</s>`, a lone byte
 * token as its character when ASCII and U+FFFD otherwise.
 */
export function logprobTokenText(tokenId: number, vocabSize = DEFAULT_VOCAB_SIZE): string {
  if (tokenId === vocabSize - 1) return EOS_TOKEN_TEXT;
  if (tokenId < BYTE_TOKEN_COUNT) return tokenId < 0x80 ? String.fromCharCode(tokenId) : '\ufffd';
  return tokenTexts(vocabSize)[tokenId] ?? '';
}

/** How the EOS token is spelled where special tokens are shown (logprobs), Llama-style. */
export const EOS_TOKEN_TEXT = '</s>';

function wordForIndex(index: number): string {
  if (index < TWO_SYLLABLE_WORDS) {
    return SYLLABLES[Math.floor(index / SYLLABLE_COUNT)]! + SYLLABLES[index % SYLLABLE_COUNT]!;
  }
  let rest = index - TWO_SYLLABLE_WORDS;
  const third = rest % SYLLABLE_COUNT;
  rest = Math.floor(rest / SYLLABLE_COUNT);
  const second = rest % SYLLABLE_COUNT;
  const first = Math.floor(rest / SYLLABLE_COUNT);
  return SYLLABLES[first]! + SYLLABLES[second]! + SYLLABLES[third]!;
}

const textCache = new Map<number, string[]>();

/** Text of every token id for a vocabulary size (cached): bytes as latin1 characters, words with a leading space. */
function tokenTexts(vocabSize: number): string[] {
  let texts = textCache.get(vocabSize);
  if (texts) return texts;
  texts = new Array<string>(vocabSize);
  for (let id = 0; id < BYTE_TOKEN_COUNT; id++) texts[id] = String.fromCharCode(id);
  for (let id = BYTE_TOKEN_COUNT; id < vocabSize - 1; id++) texts[id] = ` ${wordForIndex(id - BYTE_TOKEN_COUNT)}`;
  texts[vocabSize - 1] = '';
  textCache.set(vocabSize, texts);
  return texts;
}

/** The text a generated (word) token decodes to, e.g. `" kavo"`. Byte tokens decode only in context. */
export function tokenText(tokenId: number, vocabSize = DEFAULT_VOCAB_SIZE): string {
  if (tokenId >= BYTE_TOKEN_COUNT && tokenId < vocabSize - 1) return tokenTexts(vocabSize)[tokenId]!;
  if (tokenId === vocabSize - 1) return '';
  return `<0x${tokenId.toString(16).padStart(2, '0').toUpperCase()}>`;
}

function wordTokenId(word: string, vocabSize: number): number | undefined {
  if (word.length !== 4 && word.length !== 6) return undefined;
  let value = 0;
  for (let offset = 0; offset < word.length; offset += 2) {
    const syllable = SYLLABLE_INDEX.get(word.slice(offset, offset + 2));
    if (syllable === undefined) return undefined;
    value = value * SYLLABLE_COUNT + syllable;
  }
  const index = word.length === 4 ? value : TWO_SYLLABLE_WORDS + value;
  const id = BYTE_TOKEN_COUNT + index;
  return id < vocabSize - 1 ? id : undefined;
}

const WORD_PATTERN = / [a-z]+/g;

/**
 * Tokenizes any text reversibly: ` word` pieces that are in the vocabulary become one token, everything else
 * becomes its UTF-8 bytes. `detokenize(tokenize(text)) === text` for every string.
 */
export function tokenize(text: string, vocabSize = DEFAULT_VOCAB_SIZE): number[] {
  const ids: number[] = [];
  const pushBytes = (piece: string): void => {
    for (const byte of Buffer.from(piece, 'utf8')) ids.push(byte);
  };
  let cursor = 0;
  for (const match of text.matchAll(WORD_PATTERN)) {
    const start = match.index;
    const id = wordTokenId(match[0].slice(1), vocabSize);
    if (id === undefined) continue;
    if (start > cursor) pushBytes(text.slice(cursor, start));
    ids.push(id);
    cursor = start + match[0].length;
  }
  if (cursor < text.length) pushBytes(text.slice(cursor));
  return ids;
}

/** Inverse of {@link tokenize}. Byte tokens are gathered and decoded as UTF-8; EOS decodes to nothing. */
export function detokenize(tokenIds: readonly number[], vocabSize = DEFAULT_VOCAB_SIZE): string {
  const texts = tokenTexts(vocabSize);
  let text = '';
  let bytes: number[] = [];
  for (const id of tokenIds) {
    if (id < BYTE_TOKEN_COUNT) {
      bytes.push(id);
      continue;
    }
    if (bytes.length > 0) {
      text += Buffer.from(bytes).toString('utf8');
      bytes = [];
    }
    text += texts[id] ?? '';
  }
  if (bytes.length > 0) text += Buffer.from(bytes).toString('utf8');
  return text;
}

/** Text of one generated token as it is streamed (bytes are never generated, so this is always a word). */
export function generatedTokenText(tokenId: number, vocabSize = DEFAULT_VOCAB_SIZE): string {
  return tokenTexts(vocabSize)[tokenId] ?? '';
}

/** A small seeded PRNG (mulberry32) for the engine's jitter and fault rolls. */
export function createRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  };
}
