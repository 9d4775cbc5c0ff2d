import { request } from 'undici';

/** POSTs JSON and returns status, headers and the raw body text. */
export async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await response.body.text();
  return { status: response.statusCode, headers: response.headers, text };
}

/** GETs and returns status, headers and the raw body text. */
export async function get(url: string) {
  const response = await request(url);
  return { status: response.statusCode, headers: response.headers, text: await response.body.text() };
}

/** Splits SSE text into the payloads of its `data:` events, checking the framing byte by byte on the way. */
export function sseData(text: string): string[] {
  if (!text.endsWith('\n\n'))
    throw new Error(`SSE body does not end with a blank line: ${JSON.stringify(text.slice(-40))}`);
  return text
    .slice(0, -2)
    .split('\n\n')
    .map((event) => {
      if (!event.startsWith('data: ') || event.includes('\n'))
        throw new Error(`Not a single-line data event: ${event}`);
      return event.slice(6);
    });
}

/** JSON chunks of an SSE body (everything before `[DONE]`), asserting `[DONE]` is last. */
export function sseChunks<T = Record<string, unknown>>(text: string): T[] {
  const data = sseData(text);
  if (data.at(-1) !== '[DONE]') throw new Error('SSE body does not end with data: [DONE]');
  return data.slice(0, -1).map((payload) => JSON.parse(payload) as T);
}
