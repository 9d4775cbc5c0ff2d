import { HttpError } from '../protocol.js';
import type { ResponseWriter, RouteRequest } from './route.js';

/** Content type of every JSON answer (Starlette's `JSONResponse`). */
export const JSON_TYPE = { 'content-type': 'application/json' } as const;

/** Writes `body` as a whole JSON response. */
export function sendJson(response: ResponseWriter, status: number, body: unknown): void {
  response.send(status, JSON_TYPE, JSON.stringify(body));
}

/**
 * An `HTTPException` raised by a vLLM route, as vLLM's handler writes it (`openai/server_utils.py`
 * http_exception_handler): `{"error": {"message": detail, "type": <HTTP phrase>, "param": null, "code"}}`.
 */
export function httpException(status: number, detail: string): HttpError {
  const phrases: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 500: 'Internal Server Error' };
  return new HttpError(status, detail, phrases[status] ?? 'Error', null);
}

/**
 * `await raw_request.json()` as the vLLM routes that read the body themselves do: an empty or malformed body is
 * `HTTPException(400, "Invalid JSON format")` (`serve/rlhf/api_router.py`).
 */
export async function rawJsonObject(request: RouteRequest): Promise<Record<string, unknown>> {
  const bytes = await request.body();
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw httpException(400, 'Invalid JSON format');
  }
  return typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : {};
}
