import { createHash } from 'node:crypto';
import { crc32, deflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_VOCAB_SIZE, expectedCompletion, type FakeVllm, startFakeVllm, tokenize } from '../src/index.js';
import { imageTokenId, MAX_IMAGE_BYTES, MAX_IMAGES_PER_PROMPT, REMOTE_IMAGE_TOKENS } from '../src/multimodal.js';
import { post } from './helpers.js';

// Images, as a vision model served by vLLM takes them (paths relative to vllm/): chat content parts
// (entrypoints/chat_utils.py), data URLs (multimodal/media/connector.py, multimodal/media/image.py), the render
// endpoint's MultiModalFeatures (entrypoints/serve/render/serving.py _extract_mm_features) and
// /inference/v1/generate taking them back (entrypoints/serve/disagg/protocol.py MultiModalFeatures,
// PlaceholderRangeInfo; entrypoints/serve/disagg/serving.py serve_tokens).
let server: FakeVllm;
let url: string;
beforeAll(async () => {
  server = await startFakeVllm({ ttftMs: 1, itlMs: 1, jitter: 0, control: false });
  url = server.url;
});
afterAll(() => server.close());

const IMAGE_TOKEN = imageTokenId(DEFAULT_VOCAB_SIZE);

/** A real grayscale PNG (signature, IHDR, IDAT, IEND with their CRCs), as PIL opens it. */
function png(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth; colour type 0 (grayscale), compression, filter, interlace 0
  const rows = Buffer.alloc((width + 1) * height, 0x80);
  for (let row = 0; row < height; row++) rows[row * (width + 1)] = 0; // filter byte of each row
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(rows)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

const dataUrl = (bytes: Buffer, format = 'png') => `data:image/${format};base64,${bytes.toString('base64')}`;
const imagePart = (imageUrl: string) => ({ type: 'image_url', image_url: { url: imageUrl } });
const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

interface Features {
  mm_hashes: Record<string, string[]>;
  mm_placeholders: Record<string, { offset: number; length: number }[]>;
  kwargs_data: Record<string, (string | null)[]> | null;
}

async function render(content: unknown) {
  const response = await post(`${url}/v1/chat/completions/render`, { messages: [{ role: 'user', content }] });
  return { ...response, body: JSON.parse(response.text) as { token_ids: number[]; features: Features | null } };
}

interface GenerateBody {
  choices: { token_ids: number[] }[];
  error: { message: string; type: string };
}

async function generate(tokenIds: number[], features: unknown, maxTokens = 4) {
  const response = await post(`${url}/inference/v1/generate`, {
    token_ids: tokenIds,
    features,
    sampling_params: { max_tokens: maxTokens, seed: 5 },
  });
  return { status: response.status, body: JSON.parse(response.text) as GenerateBody };
}

function errorOf(response: { text: string }) {
  return (JSON.parse(response.text) as { error: { message: string; type: string; param: string | null; code: number } })
    .error;
}

describe('render: images become placeholder runs and MultiModalFeatures (serve/render/serving.py)', () => {
  it('an image is ceil(w/28) x ceil(h/28) image tokens where its part stands, hashed by its bytes', async () => {
    const first = png(56, 84); // 2 x 3 patches
    const second = png(30, 10); // 2 x 1 patches
    const response = await render([
      imagePart(dataUrl(first)),
      { type: 'text', text: 'compare' },
      imagePart(dataUrl(second, 'jpeg')),
      { type: 'text', text: ' them' },
    ]);
    expect(response.status).toBe(200);
    const { token_ids: tokenIds, features } = response.body;
    // The toy template, each image's run spliced in where its part stands.
    const expected = [
      ...tokenize('<|user|>\n'),
      ...Array(6).fill(IMAGE_TOKEN),
      ...tokenize('compare'),
      ...Array(2).fill(IMAGE_TOKEN),
      ...tokenize(' them\n<|assistant|>\n'),
    ];
    expect(tokenIds).toEqual(expected);
    const firstOffset = tokenize('<|user|>\n').length;
    const secondOffset = firstOffset + 6 + tokenize('compare').length;
    // pydantic's model_dump order: mm_hashes, mm_placeholders, kwargs_data.
    expect(Object.keys(features!)).toEqual(['mm_hashes', 'mm_placeholders', 'kwargs_data']);
    expect(features!.mm_hashes).toEqual({ image: [sha256(first), sha256(second)] });
    expect(features!.mm_placeholders).toEqual({
      image: [
        { offset: firstOffset, length: 6 },
        { offset: secondOffset, length: 2 },
      ],
    });
    // render runs with skip_mm_cache=True, so every item carries its data: one string per item.
    expect(features!.kwargs_data!.image).toHaveLength(2);
    expect(features!.kwargs_data!.image!.every((item) => typeof item === 'string')).toBe(true);
  });

  it('a text-only prompt renders with features null, tokens as before', async () => {
    const response = await render([{ type: 'text', text: 'hello' }]);
    expect(response.body.features).toBeNull();
    expect(response.body.token_ids).toEqual(tokenize('<|user|>\nhello\n<|assistant|>\n'));
  });

  it('a large image is held to 256 tokens; a part uuid is its mm_hash', async () => {
    const response = await render([{ type: 'image_url', image_url: { url: dataUrl(png(1000, 1000)) }, uuid: 'img-7' }]);
    expect(response.status).toBe(200);
    expect(response.body.features!.mm_hashes).toEqual({ image: ['img-7'] });
    expect(response.body.features!.mm_placeholders.image![0]!.length).toBe(256);
  });

  it('an http(s) URL is not fetched: the URL is the identity and the image counts as 224 x 224', async () => {
    const remote = 'https://example.com/cat.png';
    const response = await render([imagePart(remote)]);
    expect(response.status).toBe(200);
    expect(response.body.features!.mm_hashes).toEqual({ image: [sha256(remote)] });
    expect(response.body.features!.mm_placeholders.image![0]!.length).toBe(REMOTE_IMAGE_TOKENS);
  });

  it('JPEG, GIF, WebP and BMP headers give their sizes too', async () => {
    const jpeg = Buffer.from([
      0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00, 0xff, 0xc0, 0x00, 0x0b, 0x08, 0x00, 0x38, 0x00, 0x1d, 0x01, 0x01,
      0x11, 0x00,
    ]); // SOF0: 56 high, 29 wide -> 2 x 2
    const gif = Buffer.from('474946383961' + '1d00' + '3800' + '000000', 'hex'); // 29 x 56
    const webp = Buffer.alloc(30);
    webp.write('RIFF', 0, 'latin1');
    webp.write('WEBPVP8X', 8, 'latin1');
    webp.writeUIntLE(28, 24, 3); // width - 1
    webp.writeUIntLE(55, 27, 3); // height - 1
    const bmp = Buffer.alloc(26);
    bmp.write('BM', 0, 'latin1');
    bmp.writeUInt32LE(40, 14);
    bmp.writeInt32LE(29, 18);
    bmp.writeInt32LE(-56, 22); // top-down
    for (const bytes of [jpeg, gif, webp, bmp]) {
      const response = await render([imagePart(dataUrl(bytes))]);
      expect(response.status, response.text).toBe(200);
      expect(response.body.features!.mm_placeholders.image![0]!.length).toBe(4);
    }
  });
});

describe('image parts vLLM refuses, with its status and words (chat_utils.py, media/connector.py)', () => {
  const cases: [string, unknown, number, string, string][] = [
    [
      'bytes that are no image',
      imagePart(dataUrl(Buffer.from('hello'))),
      400,
      'BadRequestError',
      'Failed to load image: cannot identify image file',
    ],
    [
      'a body that is not base64',
      imagePart('data:image/png;base64,@@@@'),
      400,
      'BadRequestError',
      'Non-base64 digit found',
    ],
    ['base64 without padding', imagePart('data:image/png;base64,aGVsbG8'), 400, 'BadRequestError', 'Incorrect padding'],
    [
      'a data URL without ;base64',
      imagePart('data:image/png,xyz'),
      400,
      'BadRequestError',
      'not enough values to unpack (expected 2, got 1)',
    ],
    [
      'a data URL that is not base64',
      imagePart('data:image/png;utf8,xyz'),
      501,
      'NotImplementedError',
      'Only base64 data URLs are supported for now.',
    ],
    [
      'a file: URL',
      imagePart('file:///etc/passwd'),
      500,
      'InternalServerError',
      'Cannot load local files without `--allowed-local-media-path`.',
    ],
    [
      'another scheme',
      imagePart('ftp://example.com/a.png'),
      400,
      'BadRequestError',
      'The URL must be either a HTTP, data or file URL.',
    ],
    [
      'image_url as a string',
      { type: 'image_url', image_url: 'https://example.com/a.png' },
      400,
      'BadRequestError',
      'validation error for ChatCompletionContentPartImageParam',
    ],
    [
      'audio, which the model does not take',
      { type: 'audio_url', audio_url: { url: 'https://example.com/a.wav' } },
      400,
      'BadRequestError',
      'At most 0 audio(s) may be provided in one prompt.',
    ],
    [
      'image embeddings',
      { type: 'image_embeds', image_embeds: 'AAAA' },
      400,
      'BadRequestError',
      'You must set `--enable-mm-embeds` to input `image_embeds`',
    ],
    ['a part without a type', { text: 'hi' }, 400, 'BadRequestError', "Missing 'type' field in multimodal part."],
    [
      'a url that is not a string',
      { type: 'image_url', image_url: { url: 7 } },
      400,
      'BadRequestError',
      'image_url.url\n  Input should be a valid string',
    ],
    ['a part that is null', null, 400, 'BadRequestError', 'messages[0].content[0] must be a string or an object'],
  ];
  it.each(cases)('%s', async (_name, part, status, type, message) => {
    const response = await render([part]);
    expect(response.status, response.text).toBe(status);
    const error = errorOf(response);
    expect([error.type, error.code]).toEqual([type, status]);
    expect(error.message).toContain(message);
  });

  it('an unknown part type is a VLLMValidationError with param "type"', async () => {
    const response = await render([{ type: 'hologram' }]);
    expect(response.status).toBe(400);
    expect(errorOf(response)).toEqual({
      message:
        "Unsupported chat content part type: 'hologram'. Supported types: audio_embeds, audio_url, image_embeds, image_pil, image_url, input_audio, input_image, input_text, output_text, prompt_embeds, refusal, text, thinking, tool_reference, video_url. (parameter=type, value=hologram)",
      type: 'BadRequestError',
      param: 'type',
      code: 400,
    });
  });

  it(`more than ${MAX_IMAGES_PER_PROMPT} images is validate_num_items' 400 (multimodal/processing/context.py)`, async () => {
    const part = imagePart(dataUrl(png(28, 28)));
    expect((await render(Array(MAX_IMAGES_PER_PROMPT).fill(part))).status).toBe(200);
    const response = await render(Array(MAX_IMAGES_PER_PROMPT + 1).fill(part));
    expect(response.status).toBe(400);
    expect(errorOf(response).message).toBe(`At most ${MAX_IMAGES_PER_PROMPT} image(s) may be provided in one prompt.`);
  });

  it('an image over the size cap is refused before it is decoded', async () => {
    const base64 = 'A'.repeat(Math.ceil(((MAX_IMAGE_BYTES + 3) * 4) / 3 / 4) * 4);
    const response = await render([imagePart(`data:image/png;base64,${base64}`)]);
    expect(response.status).toBe(400);
    expect(errorOf(response).message).toContain(`at most ${MAX_IMAGE_BYTES} bytes per image`);
  });
});

describe('chat and tokenize count the placeholders', () => {
  it('/v1/chat/completions generates after the image tokens, and usage counts them', async () => {
    const content = [imagePart(dataUrl(png(84, 84))), { type: 'text', text: 'what is it' }];
    const rendered = await render(content);
    const response = await post(`${url}/v1/chat/completions`, {
      messages: [{ role: 'user', content }],
      max_tokens: 3,
      seed: 2,
      return_token_ids: true,
    });
    expect(response.status).toBe(200);
    const body = JSON.parse(response.text);
    expect(body.prompt_token_ids).toEqual(rendered.body.token_ids);
    expect(body.usage.prompt_tokens).toBe(rendered.body.token_ids.length);
    expect(body.choices[0].token_ids).toEqual(
      expectedCompletion(rendered.body.token_ids, { seed: 2, maxTokens: 3 }).tokenIds,
    );
  });

  it('/tokenize with messages renders the image tokens too', async () => {
    const content = [imagePart(dataUrl(png(28, 56)))];
    const rendered = await render(content);
    const response = await post(`${url}/tokenize`, { messages: [{ role: 'user', content }] });
    expect(JSON.parse(response.text).tokens).toEqual(rendered.body.token_ids);
  });
});

describe('/inference/v1/generate takes features (serve/disagg/protocol.py, serving.py)', () => {
  it('render then generate: the tokens of the prompt, as a text prompt of the same ids', async () => {
    const rendered = await render([imagePart(dataUrl(png(56, 56))), { type: 'text', text: 'describe' }]);
    const response = await generate(rendered.body.token_ids, rendered.body.features);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    expect(response.body.choices[0]!.token_ids).toEqual(
      expectedCompletion(rendered.body.token_ids, { seed: 5, maxTokens: 4 }).tokenIds,
    );
  });

  it('a shape pydantic rejects is a 400 "Bad Request" with the field in loc', async () => {
    const rendered = await render([imagePart(dataUrl(png(56, 56)))]);
    const { token_ids: tokenIds, features } = rendered.body;
    const shapes: [unknown, string][] = [
      ['images', "'type': 'model_type', 'loc': ('body', 'features')"],
      [{ mm_hashes: features!.mm_hashes }, "'type': 'missing', 'loc': ('body', 'features', 'mm_placeholders')"],
      [
        { ...features, mm_hashes: { image: [7] } },
        "'type': 'string_type', 'loc': ('body', 'features', 'mm_hashes', 'image', 0)",
      ],
      [
        { ...features, mm_placeholders: { image: [{ offset: 'x', length: 4 }] } },
        "'type': 'int_type', 'loc': ('body', 'features', 'mm_placeholders', 'image', 0, 'offset')",
      ],
      [
        { ...features, kwargs_data: { image: 'abc' } },
        "'type': 'list_type', 'loc': ('body', 'features', 'kwargs_data', 'image')",
      ],
    ];
    for (const [bad, entry] of shapes) {
      const response = await generate(tokenIds, bad);
      expect(response.status).toBe(400);
      expect(response.body.error.type).toBe('Bad Request');
      expect(response.body.error.message).toContain(entry);
    }
  });

  it('features the engine cannot use are a 400 naming the field', async () => {
    const rendered = await render([imagePart(dataUrl(png(56, 56)))]);
    const { token_ids: tokenIds } = rendered.body;
    const features = rendered.body.features!;
    const range = features.mm_placeholders.image![0]!;
    const cases: [unknown, string][] = [
      [
        { ...features, mm_placeholders: { image: [{ offset: tokenIds.length - 2, length: 4 }] } },
        'is not a non-empty range inside token_ids',
      ],
      [{ ...features, mm_placeholders: { image: [{ offset: 0, length: 4 }] } }, 'not the image token'],
      [{ ...features, mm_placeholders: { image: [range, range] } }, 'the lists must be parallel'],
      [{ ...features, kwargs_data: { image: ['bm90IGFuIGl0ZW0='] } }, 'is not a multimodal item fake-vllm encoded'],
      [{ ...features, mm_placeholders: { image: [{ ...range, length: 3 }] } }, 'but its item has 4 embeddings'],
      [{ ...features, mm_hashes: { ...features.mm_hashes, audio: ['a'] } }, "modality 'audio'"],
    ];
    for (const [bad, message] of cases) {
      const response = await generate(tokenIds, bad);
      expect(response.status, message).toBe(400);
      expect(response.body.error.type).toBe('BadRequestError');
      expect(response.body.error.message).toContain(message);
    }
  });

  it('kwargs_data null names cached items: known after a request with data, forgotten by /reset_mm_cache', async () => {
    const rendered = await render([imagePart(dataUrl(png(140, 28)))]);
    const { token_ids: tokenIds, features } = rendered.body;
    const byHash = { ...features, kwargs_data: null };
    // Render itself does not fill the cache (skip_mm_cache=True).
    const miss = await generate(tokenIds, byHash);
    expect(miss.status).toBe(400);
    expect(miss.body.error.message).toContain("is not in this engine's multimodal cache");
    expect((await generate(tokenIds, features)).status).toBe(200);
    expect((await generate(tokenIds, byHash)).status).toBe(200);
    expect((await generate(tokenIds, { ...features, kwargs_data: { image: [null] } })).status).toBe(200);
    expect((await post(`${url}/reset_mm_cache`, {})).status).toBe(200);
    expect((await generate(tokenIds, byHash)).status).toBe(400);
  });

  it('a chat completion with an image caches it as well', async () => {
    const content = [imagePart(dataUrl(png(28, 140)))];
    const rendered = await render(content);
    await post(`${url}/v1/chat/completions`, { messages: [{ role: 'user', content }], max_tokens: 1 });
    const response = await generate(rendered.body.token_ids, { ...rendered.body.features, kwargs_data: null });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
  });
});
