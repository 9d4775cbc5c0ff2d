import { isInferenceError, type RequestStats } from 'remote-inference-client';

/** What one request came to, as the load generator saw it (before verification). */
export interface Outcome {
  /** A whole successful response arrived (its tokens are not verified yet). */
  ok: boolean;
  errorKind: string | undefined;
  tokenIds: number[];
  text: string;
  ttftMs: number | undefined;
  gapsMs: number[];
  e2eMs: number;
  /** The SDK's view of the request (`--mode sdk`); undefined in direct mode. */
  stats: RequestStats | undefined;
  /** HTTP attempts this request made, retries and resumes included (direct mode: 1). */
  attempts: number;
  /** Re-sends on a reused socket that died before any byte: they may or may not have reached an engine. */
  staleRetries: number;
}

/** Error kind for the report: HTTP status, reset, timeout, EADDRNOTAVAIL, EMFILE, parse, ... */
export function errorKind(error: unknown): string {
  if (!isInferenceError(error)) return 'other';
  switch (error.code) {
    case 'ERR_HTTP_STATUS':
      return `http_${error.status}`;
    case 'ERR_CONNECTION': {
      const system = (error as { systemCode?: string }).systemCode;
      return system === 'ECONNREFUSED' ? 'refused' : 'reset';
    }
    case 'ERR_TIMEOUT':
      return `timeout_${(error as { phase?: string }).phase}`;
    case 'ERR_PORTS_EXHAUSTED':
      return 'EADDRNOTAVAIL';
    case 'ERR_TOO_MANY_OPEN_FILES':
      return 'EMFILE';
    case 'ERR_STREAM_PARSE':
      return 'parse';
    case 'ERR_RETRIES_EXHAUSTED': {
      const errors = (error as { errors?: unknown[] }).errors ?? [];
      return `retries_exhausted:${errorKind(errors.at(-1))}`;
    }
    default:
      return error.code.replace(/^ERR_/, '').toLowerCase();
  }
}
