/**
 * Images for the fake model, as a vision model's processor in vLLM sees them: chat content parts in
 * (`vllm/entrypoints/chat_utils.py`, `vllm/multimodal/media/connector.py`), placeholder token runs and
 * `MultiModalFeatures` out (`vllm/entrypoints/serve/render/serving.py` `_extract_mm_features`), and the same
 * features taken back by `/inference/v1/generate` (`serve/disagg/protocol.py`, `serve/disagg/serving.py`).
 *
 * The fake model's processor: an image becomes one run of {@link imageTokenId} repeated
 * `min(ceil(width / 28) x ceil(height / 28), 256)` times (28-pixel patches, as Qwen2-VL's, with a token budget per
 * image); its `mm_hash` is the SHA-256 hex of the decoded bytes. Nothing is decoded beyond the header that holds
 * the size, so any PNG, JPEG, GIF, WebP or BMP works, and anything else is refused as PIL refuses it.
 */
import { createHash } from 'node:crypto';
import { HttpError, requestValidationError } from './protocol.js';

/** The only modality the fake model takes. */
export const IMAGE_MODALITY = 'image';
/** Most images in one prompt (`--limit-mm-per-prompt` in vLLM, whose default is 999). */
export const MAX_IMAGES_PER_PROMPT = 32;
/** Most decoded bytes of one image. vLLM has no such limit; a fake keeps its memory bounded. */
export const MAX_IMAGE_BYTES = 20 * 1024 * 1024;
/** Side of one image patch, in pixels: each patch is one placeholder token. */
export const IMAGE_PATCH_PIXELS = 28;
/** Most placeholder tokens of one image (a processor resizes large images into a budget). */
export const MAX_IMAGE_TOKENS = 256;
/** Placeholder tokens of an http(s) image, which the fake does not fetch: a 224 x 224 image's. */
export const REMOTE_IMAGE_TOKENS = 64;
/** Items one engine's multimodal cache remembers (least recently used first out). */
export const MM_CACHE_ITEMS = 4096;

/** The image placeholder token: the last word id below EOS (`vocabSize - 2`). */
export function imageTokenId(vocabSize: number): number {
  return vocabSize - 2;
}

/** One image as the processor handed it on. */
export interface ImageItem {
  /** `mm_hashes` entry: SHA-256 hex of the bytes (of the URL for http(s)), or the part's `uuid`. */
  hash: string;
  /** Placeholder tokens (the number of embeddings the encoder would produce). */
  tokens: number;
}

/** Where one item's placeholder tokens are in the prompt (`PlaceholderRangeInfo`). */
export interface PlaceholderRange {
  offset: number;
  length: number;
}

/** vLLM's `MultiModalFeatures` as JSON. */
export interface MultiModalFeatures {
  mm_hashes: Record<string, string[]>;
  mm_placeholders: Record<string, PlaceholderRange[]>;
  kwargs_data: Record<string, (string | null)[]> | null;
}

/** `ValueError` raised while rendering: a 400 `BadRequestError` with `param: null` (`entrypoints/utils.py`). */
function valueError(message: string): HttpError {
  return new HttpError(400, message, 'BadRequestError', null);
}

/** Width and height from an image's header, or undefined when it is no image PIL would open. */
export function imageSize(bytes: Buffer): { width: number; height: number } | undefined {
  const size = (width: number, height: number) => (width > 0 && height > 0 ? { width, height } : undefined);
  const ascii = (start: number, end: number) => bytes.toString('latin1', start, end);
  if (bytes.length >= 24 && bytes.readUInt32BE(0) === 0x89504e47 && bytes.readUInt32BE(4) === 0x0d0a1a0a) {
    return ascii(12, 16) === 'IHDR' ? size(bytes.readUInt32BE(16), bytes.readUInt32BE(20)) : undefined;
  }
  if (bytes.length >= 10 && (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a')) {
    return size(bytes.readUInt16LE(6), bytes.readUInt16LE(8));
  }
  if (bytes.length >= 26 && ascii(0, 2) === 'BM') {
    const header = bytes.readUInt32LE(14);
    if (header === 12) return size(bytes.readUInt16LE(18), bytes.readUInt16LE(20));
    // A negative height is a top-down bitmap.
    return header >= 40 ? size(Math.abs(bytes.readInt32LE(18)), Math.abs(bytes.readInt32LE(22))) : undefined;
  }
  if (bytes.length >= 30 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') {
    const chunk = ascii(12, 16);
    if (chunk === 'VP8X') return size(1 + bytes.readUIntLE(24, 3), 1 + bytes.readUIntLE(27, 3));
    if (chunk === 'VP8L' && bytes[20] === 0x2f) {
      const bits = bytes.readUInt32LE(21);
      return size(1 + (bits & 0x3fff), 1 + ((bits >>> 14) & 0x3fff));
    }
    if (chunk === 'VP8 ' && bytes[23] === 0x9d && bytes[24] === 0x01 && bytes[25] === 0x2a) {
      return size(bytes.readUInt16LE(26) & 0x3fff, bytes.readUInt16LE(28) & 0x3fff);
    }
    return undefined;
  }
  if (bytes.length >= 4 && bytes[0] === 0xff && bytes[1] === 0xd8) return jpegSize(bytes);
  return undefined;
}

/** A JPEG's size from its first start-of-frame segment. */
function jpegSize(bytes: Buffer): { width: number; height: number } | undefined {
  let index = 2;
  while (index + 4 <= bytes.length) {
    if (bytes[index] !== 0xff) return undefined;
    const marker = bytes[index + 1]!;
    if (marker === 0xff) {
      index++;
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd9)) {
      index += 2;
      continue;
    }
    // SOF0-SOF15, except DHT (C4), JPG (C8) and DAC (CC).
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      if (index + 9 > bytes.length) return undefined;
      const height = bytes.readUInt16BE(index + 5);
      const width = bytes.readUInt16BE(index + 7);
      return width > 0 && height > 0 ? { width, height } : undefined;
    }
    index += 2 + bytes.readUInt16BE(index + 2);
  }
  return undefined;
}

/** Placeholder tokens of an image of this size. */
export function imageTokenCount(width: number, height: number): number {
  return Math.min(MAX_IMAGE_TOKENS, Math.ceil(width / IMAGE_PATCH_PIXELS) * Math.ceil(height / IMAGE_PATCH_PIXELS));
}

/** SHA-256 hex, the fake's `mm_hash` (vLLM's is blake3 over the decoded pixels; both are 64 hex digits). */
export function mmHash(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * `base64.b64decode(data, validate=True)` (`vllm/multimodal/media/image.py` load_base64), with CPython's messages;
 * the size is checked from the length first, so an oversized image is never decoded.
 */
function decodeBase64(data: string): Buffer {
  const decodedLength = Math.floor((data.length * 3) / 4);
  if (decodedLength > MAX_IMAGE_BYTES + 2) {
    throw valueError(
      `The image holds about ${decodedLength} bytes; fake-vllm accepts at most ${MAX_IMAGE_BYTES} bytes per image. Send a smaller image.`,
    );
  }
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(data)) throw valueError('Non-base64 digit found');
  const digits = data.length - (data.endsWith('==') ? 2 : data.endsWith('=') ? 1 : 0);
  if (digits % 4 === 1) {
    throw valueError(
      `Invalid base64-encoded string: number of data characters (${digits}) cannot be 1 more than a multiple of 4`,
    );
  }
  if (data.length % 4 !== 0) throw valueError('Incorrect padding');
  const bytes = Buffer.from(data, 'base64');
  if (bytes.length > MAX_IMAGE_BYTES) {
    throw valueError(
      `The image holds ${bytes.length} bytes; fake-vllm accepts at most ${MAX_IMAGE_BYTES} bytes per image. Send a smaller image.`,
    );
  }
  return bytes;
}

/**
 * One image URL through vLLM's `MediaConnector.load_from_url`: `data:` URLs are decoded (base64 only), http(s)
 * URLs are not fetched (the fake is offline: the URL string is the image's identity), `file:` URLs need
 * `--allowed-local-media-path`, which the fake does not have.
 */
export function loadImage(url: string, uuid: string | undefined): ImageItem {
  if (url.slice(0, 5).toLowerCase() === 'data:') {
    // `data_spec, data = url[5:].split(",", 1)`, then `media_type, data_type = data_spec.split(";", 1)`.
    const rest = url.slice(5);
    const comma = rest.indexOf(',');
    const spec = comma < 0 ? '' : rest.slice(0, comma);
    if (comma < 0 || !spec.includes(';')) throw valueError('not enough values to unpack (expected 2, got 1)');
    if (spec.slice(spec.indexOf(';') + 1) !== 'base64') {
      throw new HttpError(501, 'Only base64 data URLs are supported for now.', 'NotImplementedError');
    }
    const bytes = decodeBase64(rest.slice(comma + 1));
    const size = imageSize(bytes);
    if (!size) {
      // PIL's UnidentifiedImageError, re-raised as ValueError by ImageMediaIO.load_bytes.
      throw valueError('Failed to load image: cannot identify image file <_io.BytesIO object>');
    }
    return { hash: uuid ?? mmHash(bytes), tokens: imageTokenCount(size.width, size.height) };
  }
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url)?.[1]?.toLowerCase();
  if (scheme?.startsWith('http')) return { hash: uuid ?? mmHash(url), tokens: REMOTE_IMAGE_TOKENS };
  if (scheme === 'file') {
    // A RuntimeError in vLLM, hence a 500.
    throw new HttpError(500, 'Cannot load local files without `--allowed-local-media-path`.', 'InternalServerError');
  }
  throw valueError('The URL must be either a HTTP, data or file URL.');
}

/** The part types vLLM's chat parser knows (`MM_PARSER_MAP` and the text types), sorted as its error lists them. */
const SUPPORTED_PART_TYPES = [
  'audio_embeds',
  'audio_url',
  'image_embeds',
  'image_pil',
  'image_url',
  'input_audio',
  'input_image',
  'input_text',
  'output_text',
  'prompt_embeds',
  'refusal',
  'text',
  'thinking',
  'tool_reference',
  'video_url',
];

/** What one content part renders as. */
export type ContentPiece = { text: string } | { image: ImageItem } | undefined;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `validate_num_items` (`vllm/multimodal/processing/context.py`) for a modality the fake model does not take. */
function noSuchModality(modality: string): HttpError {
  return valueError(`At most 0 ${modality}(s) may be provided in one prompt.`);
}

function imageFromUrl(url: unknown, uuid: string | undefined, where: string): ContentPiece {
  if (typeof url !== 'string' || url === '') {
    throw valueError(
      `${where} has no image URL: give {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}} (fake-vllm keeps no media to reference by uuid alone)`,
    );
  }
  return { image: loadImage(url, uuid) };
}

/**
 * One chat content part, as `_parse_chat_message_content_mm_part` and `_parse_chat_message_content_part`
 * (`vllm/entrypoints/chat_utils.py`) read it: text kinds give text, `image_url` / `input_image` an image, the
 * modalities the fake model lacks vLLM's error for them.
 */
export function parseContentPart(part: unknown, where: string): ContentPiece {
  if (typeof part === 'string') return { text: part };
  if (!isObject(part)) throw valueError(`${where} must be a string or an object with a "type"`);
  const type = part.type;
  const uuid = part.uuid === undefined || part.uuid === null ? undefined : String(part.uuid);
  const text = (value: unknown): ContentPiece => (typeof value === 'string' ? { text: value } : undefined);
  if (typeof type === 'string' && SUPPORTED_PART_TYPES.includes(type) && uuid === undefined) {
    switch (type) {
      case 'text':
      case 'input_text':
      case 'output_text':
        return text(part.text);
      case 'thinking':
        return text(part.thinking);
      case 'refusal':
        return text(part.refusal);
      case 'tool_reference':
        return text(part.name);
      case 'image_url': {
        const imageUrl = part.image_url;
        if (!isObject(imageUrl) || typeof imageUrl.url !== 'string') {
          // pydantic's TypeAdapter(ChatCompletionContentPartImageParam) error, a ValueError.
          const missing = !isObject(imageUrl)
            ? 'image_url\n  Input should be a valid dictionary'
            : imageUrl.url === undefined
              ? 'image_url.url\n  Field required'
              : 'image_url.url\n  Input should be a valid string';
          throw valueError(`1 validation error for ChatCompletionContentPartImageParam\n${missing}`);
        }
        return imageFromUrl(imageUrl.url, uuid, where);
      }
      case 'input_image':
        return imageFromUrl(part.image_url, uuid, where);
      case 'image_embeds':
      case 'audio_embeds':
        throw valueError(`You must set \`--enable-mm-embeds\` to input \`${type}\``);
      case 'prompt_embeds':
        if (!part.data) {
          throw valueError(
            'prompt_embeds content part requires a non-empty `data` field with base64-encoded tensor bytes.',
          );
        }
        throw valueError('You must set `--enable-prompt-embeds` to input `prompt_embeds`');
      case 'audio_url':
      case 'input_audio':
        throw noSuchModality('audio');
      case 'video_url':
        throw noSuchModality('video');
      default:
        throw valueError(
          `${where}: an \`image_pil\` part holds a PIL image, which JSON cannot carry; send \`image_url\``,
        );
    }
  }
  if (type === undefined || type === null || uuid !== undefined) {
    // No `type` (or a `uuid`): vLLM looks for the media field directly.
    if ('image_url' in part) {
      const imageUrl = part.image_url;
      return imageFromUrl(isObject(imageUrl) ? imageUrl.url : imageUrl, uuid, where);
    }
    if ('image_embeds' in part) throw valueError('You must set `--enable-mm-embeds` to input `image_embeds`');
    if ('audio_embeds' in part) throw valueError('You must set `--enable-mm-embeds` to input `audio_embeds`');
    if ('prompt_embeds' in part) throw valueError('You must set `--enable-prompt-embeds` to input `prompt_embeds`');
    if ('audio_url' in part || (part.input_audio !== undefined && part.input_audio !== null)) {
      throw noSuchModality('audio');
    }
    if ('video_url' in part) throw noSuchModality('video');
    if ('tool_reference' in part) return text(part.tool_reference);
    throw valueError("Missing 'type' field in multimodal part.");
  }
  if (typeof type !== 'string') throw valueError("Invalid 'type' field in multimodal part.");
  // A VLLMValidationError with parameter "type": its str() carries the parameter and value.
  throw new HttpError(
    400,
    `Unsupported chat content part type: ${pythonQuote(type)}. Supported types: ${SUPPORTED_PART_TYPES.join(', ')}. (parameter=type, value=${type})`,
    'BadRequestError',
    'type',
  );
}

function pythonQuote(text: string): string {
  return text.includes("'") && !text.includes('"') ? `"${text}"` : `'${text.replaceAll("'", "\\'")}'`;
}

/** `validate_num_items` for images: vLLM counts each item as it is added. */
export function checkImageCount(count: number): void {
  if (count > MAX_IMAGES_PER_PROMPT) {
    throw valueError(`At most ${MAX_IMAGES_PER_PROMPT} image(s) may be provided in one prompt.`);
  }
}

/**
 * A `kwargs_data` entry: vLLM's is a base64 msgpack `MultiModalKwargsItem` (the pixel tensors); the fake's is base64
 * JSON naming what the encoder would produce, so `/inference/v1/generate` can check it against its placeholder.
 */
export function encodeKwargsItem(item: ImageItem): string {
  const json = JSON.stringify({
    fake_vllm_mm_item: 1,
    modality: IMAGE_MODALITY,
    mm_hash: item.hash,
    num_embeds: item.tokens,
  });
  return Buffer.from(json).toString('base64');
}

function decodeKwargsItem(data: string, where: string): { numEmbeds: number } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(data, 'base64').toString('utf8'));
  } catch {
    parsed = undefined;
  }
  if (!isObject(parsed) || parsed.fake_vllm_mm_item !== 1 || !Number.isInteger(parsed.num_embeds)) {
    throw valueError(
      `${where} is not a multimodal item fake-vllm encoded: send the string /v1/chat/completions/render returned, or null for an item this engine has cached`,
    );
  }
  return { numEmbeds: parsed.num_embeds as number };
}

/** `MultiModalFeatures` of a rendered prompt (`_extract_mm_features`); null for text-only prompts. */
export function featuresOf(images: readonly ImageItem[], placeholders: readonly PlaceholderRange[]) {
  if (images.length === 0) return null;
  return {
    mm_hashes: { [IMAGE_MODALITY]: images.map((image) => image.hash) },
    mm_placeholders: { [IMAGE_MODALITY]: placeholders.map(({ offset, length }) => ({ offset, length })) },
    // render runs with skip_mm_cache=True: every item carries its data.
    kwargs_data: { [IMAGE_MODALITY]: images.map(encodeKwargsItem) },
  } satisfies MultiModalFeatures;
}

/**
 * The items an engine has been sent with their data, by hash: what vLLM's multimodal cache lets a later request
 * name with a `null` `kwargs_data` entry. Bounded (least recently used first out); `/reset_mm_cache` clears it.
 */
export class MultiModalCache {
  private readonly items = new Map<string, number>();

  constructor(readonly capacity = MM_CACHE_ITEMS) {}

  /** The item's placeholder length, refreshing it, or undefined when not cached. */
  get(hash: string): number | undefined {
    const numEmbeds = this.items.get(hash);
    if (numEmbeds !== undefined) {
      this.items.delete(hash);
      this.items.set(hash, numEmbeds);
    }
    return numEmbeds;
  }

  put(hash: string, numEmbeds: number): void {
    this.items.delete(hash);
    this.items.set(hash, numEmbeds);
    if (this.items.size > this.capacity) this.items.delete(this.items.keys().next().value!);
  }

  clear(): void {
    this.items.clear();
  }

  get size(): number {
    return this.items.size;
  }
}

/** A pydantic error entry under `body.features`. */
function shapeError(loc: (string | number)[], type: string, msg: string, input: unknown): HttpError {
  return requestValidationError([{ type, loc: ['body', 'features', ...loc], msg, input }]);
}

/** `dict[str, list[T]]`: the per-modality lists of one field, checked as pydantic does. */
function modalityLists(
  features: Json,
  name: string,
  item: (value: unknown, loc: (string | number)[]) => void,
): Record<string, unknown[]> {
  const value = features[name];
  if (!isObject(value)) throw shapeError([name], 'dict_type', 'Input should be a valid dictionary', value);
  for (const [modality, list] of Object.entries(value)) {
    if (!Array.isArray(list)) throw shapeError([name, modality], 'list_type', 'Input should be a valid list', list);
    list.forEach((entry, index) => {
      item(entry, [name, modality, index]);
    });
  }
  return value as Record<string, unknown[]>;
}

/**
 * Validates `features` of a `GenerateRequest`: first its shape, as pydantic does (`MultiModalFeatures`,
 * `PlaceholderRangeInfo`, `serve/disagg/protocol.py`: 400 "Bad Request"), then what vLLM's engine relies on
 * (ranges inside `token_ids` over image tokens, lists parallel to `mm_hashes`, data or a cached item for each):
 * vLLM fails those deeper, with a 500 or in the model runner; the fake answers a 400 `BadRequestError` naming the
 * field. Items sent with data are remembered in `cache`.
 */
export function parseFeatures(
  raw: unknown,
  tokenIds: readonly number[],
  vocabSize: number,
  cache: MultiModalCache | undefined,
): MultiModalFeatures | null {
  if (raw === undefined || raw === null) return null;
  if (!isObject(raw)) {
    throw requestValidationError([
      {
        type: 'model_type',
        loc: ['body', 'features'],
        msg: 'Input should be a valid dictionary or instance of MultiModalFeatures',
        input: raw,
      },
    ]);
  }
  for (const name of ['mm_hashes', 'mm_placeholders']) {
    if (raw[name] === undefined) throw shapeError([name], 'missing', 'Field required', raw);
  }
  const hashes = modalityLists(raw, 'mm_hashes', (value, loc) => {
    if (typeof value !== 'string') throw shapeError(loc, 'string_type', 'Input should be a valid string', value);
  });
  const placeholders = modalityLists(raw, 'mm_placeholders', (value, loc) => {
    if (!isObject(value)) {
      throw shapeError(
        loc,
        'model_type',
        'Input should be a valid dictionary or instance of PlaceholderRangeInfo',
        value,
      );
    }
    for (const key of ['offset', 'length']) {
      if (value[key] === undefined) throw shapeError([...loc, key], 'missing', 'Field required', value);
      if (!Number.isInteger(value[key])) {
        throw shapeError([...loc, key], 'int_type', 'Input should be a valid integer', value[key]);
      }
    }
  });
  const kwargs =
    raw.kwargs_data === undefined || raw.kwargs_data === null
      ? null
      : modalityLists(raw, 'kwargs_data', (value, loc) => {
          if (value !== null && typeof value !== 'string') {
            throw shapeError(loc, 'string_type', 'Input should be a valid string', value);
          }
        });
  // What the engine relies on.
  const modalities = new Set([...Object.keys(hashes), ...Object.keys(placeholders), ...Object.keys(kwargs ?? {})]);
  const imageToken = imageTokenId(vocabSize);
  const covered: PlaceholderRange[] = [];
  let items = 0;
  for (const modality of modalities) {
    if (modality !== IMAGE_MODALITY) {
      throw valueError(`features name the modality '${modality}'; fake-vllm's model takes only '${IMAGE_MODALITY}'`);
    }
    const hashList = (hashes[modality] ?? []) as string[];
    const rangeList = (placeholders[modality] ?? []) as PlaceholderRange[];
    const dataList = kwargs ? ((kwargs[modality] ?? []) as (string | null)[]) : undefined;
    if (rangeList.length !== hashList.length || (dataList && dataList.length !== hashList.length)) {
      throw valueError(
        `features.mm_placeholders['${modality}'] holds ${rangeList.length} ranges${dataList ? ` and features.kwargs_data['${modality}'] ${dataList.length} items` : ''} for ${hashList.length} mm_hashes: the lists must be parallel, one entry per item`,
      );
    }
    items += hashList.length;
    checkImageCount(items);
    rangeList.forEach((range, index) => {
      const where = `features.mm_placeholders['${modality}'][${index}]`;
      const { offset, length } = range;
      if (offset < 0 || length < 1 || offset + length > tokenIds.length) {
        throw valueError(
          `${where} (offset ${offset}, length ${length}) is not a non-empty range inside token_ids (length ${tokenIds.length})`,
        );
      }
      for (let position = offset; position < offset + length; position++) {
        if (tokenIds[position] !== imageToken) {
          throw valueError(
            `${where} covers token_ids[${position}] = ${tokenIds[position]}, not the image token ${imageToken}: placeholder ranges must cover the image's placeholder tokens`,
          );
        }
      }
      for (const other of covered) {
        if (offset < other.offset + other.length && other.offset < offset + length) {
          throw valueError(`${where} overlaps another placeholder range`);
        }
      }
      covered.push(range);
      const hash = hashList[index]!;
      const data = dataList?.[index];
      let numEmbeds: number | undefined;
      if (typeof data === 'string') {
        numEmbeds = decodeKwargsItem(data, `features.kwargs_data['${modality}'][${index}]`).numEmbeds;
      } else {
        numEmbeds = cache?.get(hash);
        if (numEmbeds === undefined) {
          throw valueError(
            `features.mm_hashes['${modality}'][${index}] ('${hash}') is not in this engine's multimodal cache and comes without kwargs_data: send the kwargs_data /v1/chat/completions/render returned`,
          );
        }
      }
      if (numEmbeds !== length) {
        throw valueError(
          `${where} has length ${length}, but its item has ${numEmbeds} embeddings: the range must cover exactly the item's placeholder tokens`,
        );
      }
    });
  }
  // Items that came with their data are cached once the whole request is valid.
  const dataList = (kwargs?.[IMAGE_MODALITY] ?? []) as (string | null)[];
  const rangeList = (placeholders[IMAGE_MODALITY] ?? []) as PlaceholderRange[];
  ((hashes[IMAGE_MODALITY] ?? []) as string[]).forEach((hash, index) => {
    if (typeof dataList[index] === 'string') cache?.put(hash, rangeList[index]!.length);
  });
  return {
    mm_hashes: hashes as Record<string, string[]>,
    mm_placeholders: placeholders as Record<string, PlaceholderRange[]>,
    kwargs_data: kwargs as Record<string, (string | null)[]> | null,
  };
}
