import { performance } from 'node:perf_hooks';
import type { EngineRequest } from '../engine.js';
import type { EngineHost } from '../engine-host.js';
import { type FaultName, type FaultSpec, numberParam } from '../faults.js';
import { HttpError } from '../protocol.js';
import type { ResponseWriter } from './route.js';

/**
 * Faults that answer before the engine sees the request (statuses, resets, refused connections, a socket armed to
 * close). Returns true when the request is fully handled. Each fault is written once, here, for every transport.
 */
export function injectBeforeResponse(fault: FaultSpec, host: EngineHost, response: ResponseWriter): boolean {
  const name = fault.name;
  const injector = host.injector;
  switch (name) {
    case 'reset-before-response':
      injector.count(name);
      response.reset();
      return true;
    case 'status-429':
    case 'status-503': {
      injector.count(name);
      const status = name === 'status-429' ? 429 : 503;
      const retryAfter = fault.params.retry_after ?? '1';
      const type = status === 429 ? 'TooManyRequestsError' : 'ServiceUnavailableError';
      response.send(
        status,
        { 'content-type': 'application/json', ...(retryAfter === 'none' ? {} : { 'retry-after': retryAfter }) },
        new HttpError(status, `Injected ${status}`, type).body(),
      );
      return true;
    }
    case 'status-500-text':
      injector.count(name);
      response.send(500, { 'content-type': 'text/plain; charset=utf-8' }, 'Internal Server Error');
      return true;
    case 'status-422':
      injector.count(name);
      response.send(
        422,
        { 'content-type': 'application/json' },
        JSON.stringify({
          detail: [{ type: 'missing', loc: ['body', 'injected'], msg: 'Field required', input: null }],
        }),
      );
      return true;
    case 'refuse-connections':
      injector.count(name);
      response.reset();
      response.refuseConnections(numberParam(fault, 'window_ms', 1000));
      return true;
    case 'idle-close-race': {
      // Given per request, the race is armed for this connection: once the response is done and the socket idle,
      // the server closes it after `delay_ms` (default: a random moment within the keep-alive) and counts it. A
      // transport without connections (msw) shows the race's other half: this request fails before any byte.
      const delayMs = numberParam(fault, 'delay_ms', injector.roll() * host.options.keepAliveTimeoutMs);
      if (response.closeConnectionAfterResponse(delayMs)) return false;
      injector.count(name);
      response.reset();
      return true;
    }
    default:
      return false;
  }
}

/** `hang-before-headers`: holds the request (no byte) for `ms`, or until the client gives up. */
export async function holdBeforeHeaders(fault: FaultSpec, host: EngineHost): Promise<void> {
  host.injector.count(fault.name);
  const holdMs = numberParam(fault, 'ms', Number.POSITIVE_INFINITY);
  // Forever: the client's close frees everything; nothing in this request runs again.
  if (!Number.isFinite(holdMs)) return new Promise(() => {});
  await new Promise((resolve) => setTimeout(resolve, holdMs));
}

/** The faults that fire part-way through a generation, once the first sequence has `after_tokens` tokens. */
const MID_STREAM_FAULTS = new Set<FaultName>([
  'reset-mid-stream',
  'truncate-stream',
  'malformed-chunk',
  'error-mid-stream',
  'stall',
]);

/** Tracks a mid-stream fault's trigger point (tokens of the first sequence sent so far); fires once. */
export class MidStreamFault {
  fired = false;
  readonly triggerAfter: number;

  constructor(
    readonly fault: FaultSpec | undefined,
    private readonly host: EngineHost,
    private readonly engineRequest: EngineRequest,
  ) {
    this.triggerAfter = fault ? numberParam(fault, 'after_tokens', 1) : 0;
  }

  get name(): FaultName | undefined {
    return this.fault?.name;
  }

  /** The mid-stream fault due now, if any, counted as it fires. */
  due(): FaultName | undefined {
    const fault = this.fault;
    if (!fault || this.fired || !MID_STREAM_FAULTS.has(fault.name)) return undefined;
    const produced = this.engineRequest.sequences[0]?.tokenIds.length ?? 0;
    if (produced < this.triggerAfter) return undefined;
    this.fired = true;
    this.host.injector.count(fault.name);
    return fault.name;
  }

  /** Marks the fault fired and counts it, for faults triggered by something else than the token count. */
  fire(): void {
    if (!this.fault || this.fired) return;
    this.fired = true;
    this.host.injector.count(this.fault.name);
  }

  /** `stall`: freezes the request for `ms`, then continues, or closes or resets the connection. */
  stall(response: ResponseWriter): void {
    const fault = this.fault!;
    const ms = numberParam(fault, 'ms', 2000);
    // The action was checked when the fault was parsed (faults.ts), so it is one of these three.
    const action = fault.params.action ?? 'continue';
    const engineRequest = this.engineRequest;
    if (action === 'continue') {
      engineRequest.pausedUntilMs = performance.now() + ms;
      return;
    }
    engineRequest.pausedUntilMs = Number.POSITIVE_INFINITY;
    setTimeout(() => {
      this.host.engine.cancel(engineRequest);
      if (action === 'reset') response.reset();
      else response.destroy();
    }, ms);
  }
}
