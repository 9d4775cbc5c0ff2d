import { request } from 'undici';
import type { ClientTotals, StepResult } from './worker-protocol.js';

/**
 * A step's books: what the client counted (requests when they left the generator, outcomes when they arrived) set
 * against what the engines counted on their side. Every figure is for the requests dispatched in the step's measure
 * window. `offBy` is 0 when the books balance; otherwise the step is invalid and `explanation` says what differs.
 */
export interface StepAccounting {
  /**
   * Where the engines' side comes from: `fake-vllm tallies` (embedded engines count the window's requests by their
   * `x-fake-tally` label: exact), `vllm metrics` (`--target`: vLLM's Prometheus counters diffed across the step,
   * exact up to the requests in flight at the two boundaries), or `none` (no `/metrics`: client-side check only).
   */
  source: 'fake-vllm tallies' | 'vllm metrics' | 'none';
  /** Client: requests dispatched in the window, counted as they left the generator. */
  sent: number;
  /** Client: outcomes counted for them (completed + failed). */
  outcomes: number;
  /** Client: requests of the window still unsettled when the step closed (0 unless the drain was cut short). */
  unsettled: number;
  /** Client: whole successful responses received (before token verification). */
  answered: number;
  /** Client: HTTP attempts of the window's requests (retries and resumes included). */
  attempts: number;
  /** Client: re-sends on reused sockets that died before any byte; each may or may not have reached an engine. */
  staleRetries: number;
  /**
   * Client: TCP connects that failed in the window (the SDK's per-engine `connectErrors`; an engine restarting refuses
   * them): an attempt on such a connection never reached an engine. 0 in direct mode; absent in older summaries.
   */
  connectErrors?: number;
  /** Engines: requests received (tallies: the window's; vLLM: finished + in flight at the end - at the start). */
  engineReceived: number | null;
  /** Engines: requests answered whole (tallies) or finished `stop`/`length`/`repetition` (vLLM). */
  engineAnswered: number | null;
  /** vLLM: `vllm:request_success_total` increase over the step by `finished_reason`. */
  engineFinished: Record<string, number> | null;
  /** vLLM: `vllm:num_requests_running` + `vllm:num_requests_waiting` at the step's start and end. */
  engineInFlightAtStart: number | null;
  engineInFlightAtEnd: number | null;
  /**
   * vLLM: the client's whole answers (any step's requests) between the same two boundaries, and its requests in
   * flight at each: a request in flight at a boundary can be counted by one side before it and by the other after.
   */
  clientAnsweredBetween: number | null;
  clientInFlightAtStart: number | null;
  clientInFlightAtEnd: number | null;
  /** `sent - outcomes - unsettled`: > 0 outcomes lost, < 0 outcomes counted twice. */
  outcomeDifference: number;
  /** Engines' answers minus the client's (tallies); vLLM: the part outside the boundary allowance. */
  answeredDifference: number | null;
  /** Tallies: engines' receipts outside `[attempts, attempts + staleRetries]` (> 0: sent more than counted). */
  receivedDifference: number | null;
  /** The largest of the differences, in requests; 0 = the books balance. */
  offBy: number;
  /** What does not balance, in words; null when the books balance. */
  explanation: string | null;
}

/** Sums of the workers' step results that the books need. */
export function clientCounts(results: readonly StepResult[]) {
  const sum = (pick: (result: StepResult) => number) => results.reduce((total, result) => total + pick(result), 0);
  return {
    sent: sum((result) => result.sent),
    outcomes: sum((result) => result.completed + result.failed),
    unsettled: sum((result) => result.unsettled),
    answered: sum((result) => result.answered),
    attempts: sum((result) => result.attempts),
    staleRetries: sum((result) => result.requestStaleRetries),
    connectErrors: sum((result) => result.connectErrors ?? 0),
  };
}

type ClientCounts = ReturnType<typeof clientCounts>;

const plural = (count: number, what: string) => `${Math.abs(count)} ${what}${Math.abs(count) === 1 ? '' : 's'}`;

function close(accounting: Omit<StepAccounting, 'offBy' | 'explanation'>, notes: string[]): StepAccounting {
  const differences = [
    accounting.outcomeDifference,
    accounting.answeredDifference ?? 0,
    accounting.receivedDifference ?? 0,
  ];
  const offBy = Math.max(...differences.map((difference) => Math.abs(difference)));
  return { ...accounting, offBy, explanation: offBy === 0 ? null : notes.join('; ') };
}

function outcomeNotes(client: ClientCounts): { difference: number; notes: string[] } {
  const difference = client.sent - client.outcomes - client.unsettled;
  const notes: string[] = [];
  if (difference > 0)
    notes.push(
      `the client sent ${client.sent} but counted ${client.outcomes} outcomes (${plural(difference, 'request')} lost)`,
    );
  if (difference < 0)
    notes.push(
      `the client sent ${client.sent} but counted ${client.outcomes} outcomes (${plural(difference, 'outcome')} counted twice)`,
    );
  return { difference, notes };
}

/** Books against fake-vllm's tallies of the window's label, summed over engines: exact. */
export function reconcileWithTallies(
  client: ClientCounts,
  engines: { received: number; answered: number },
): StepAccounting {
  const { difference, notes } = outcomeNotes(client);
  const answeredDifference = engines.answered - client.answered;
  if (answeredDifference !== 0)
    notes.push(`engines answered ${engines.answered} whole, the client counted ${client.answered}`);
  const most = client.attempts + client.staleRetries;
  // An attempt whose connect failed never reached an engine (a restarting engine refuses connects).
  const least = client.attempts - client.connectErrors;
  const receivedDifference =
    engines.received > most ? engines.received - most : engines.received < least ? engines.received - least : 0;
  if (receivedDifference !== 0)
    notes.push(
      `engines received ${engines.received}, the client made ${client.attempts} attempts${client.staleRetries ? ` (+${client.staleRetries} stale re-sends)` : ''}${client.connectErrors ? ` (${client.connectErrors} on connects that failed)` : ''}`,
    );
  return close(
    {
      source: 'fake-vllm tallies',
      ...client,
      engineReceived: engines.received,
      engineAnswered: engines.answered,
      engineFinished: null,
      engineInFlightAtStart: null,
      engineInFlightAtEnd: null,
      clientAnsweredBetween: null,
      clientInFlightAtStart: null,
      clientInFlightAtEnd: null,
      outcomeDifference: difference,
      answeredDifference,
      receivedDifference,
    },
    notes,
  );
}

/** vLLM's counters at one moment, summed over engines (and over every `model_name`/`engine` label). */
export interface VllmCounters {
  /** `vllm:request_success_total` by `finished_reason`. */
  finished: Record<string, number>;
  /** `vllm:num_requests_running` + `vllm:num_requests_waiting`. */
  inFlight: number;
}

/** Finish reasons of a generation that ran to its end (`vllm/v1/engine/__init__.py` FinishReason). */
const ANSWERED_REASONS = ['stop', 'length', 'repetition'];

/**
 * Books against vLLM's counters read before and after the step (`--target`). vLLM counts no receipts and cannot
 * tell the sweep's steps apart, so the engines' answers between the two reads are set against the client's answers
 * (any step's requests) between its two snapshots, taken inside the reads; a request in flight at a boundary may
 * land on different sides, so a difference within `[-inFlightAtStart, +inFlightAtEnd]` balances.
 */
export function reconcileWithVllmMetrics(
  client: ClientCounts,
  before: VllmCounters,
  after: VllmCounters,
  clientStart: ClientTotals,
  clientEnd: ClientTotals,
): StepAccounting {
  const { difference, notes } = outcomeNotes(client);
  const finished: Record<string, number> = {};
  for (const [reason, count] of Object.entries(after.finished)) {
    const delta = count - (before.finished[reason] ?? 0);
    if (delta !== 0) finished[reason] = delta;
  }
  const engineAnswered = ANSWERED_REASONS.reduce((total, reason) => total + (finished[reason] ?? 0), 0);
  const allFinished = Object.values(finished).reduce((total, count) => total + count, 0);
  const between = clientEnd.answered - clientStart.answered;
  const raw = engineAnswered - between;
  const answeredDifference =
    raw > clientEnd.inFlight ? raw - clientEnd.inFlight : raw < -clientStart.inFlight ? raw + clientStart.inFlight : 0;
  if (answeredDifference !== 0)
    notes.push(
      `engines finished ${engineAnswered} (stop/length) between the step's boundaries, the client received ${between} whole, more apart than the ${clientStart.inFlight} + ${clientEnd.inFlight} requests in flight at the boundaries allow`,
    );
  return close(
    {
      source: 'vllm metrics',
      ...client,
      engineReceived: allFinished + after.inFlight - before.inFlight,
      engineAnswered,
      engineFinished: finished,
      engineInFlightAtStart: before.inFlight,
      engineInFlightAtEnd: after.inFlight,
      clientAnsweredBetween: between,
      clientInFlightAtStart: clientStart.inFlight,
      clientInFlightAtEnd: clientEnd.inFlight,
      outcomeDifference: difference,
      answeredDifference,
      receivedDifference: null,
    },
    notes,
  );
}

/** Where a step's books can be checked: fake-vllm's per-label tallies, or vLLM's counters around the step. */
export interface StepBookSources {
  /** Embedded engines' stats, each with its per-label tallies (`x-fake-tally`). */
  engines?: readonly { tallies: Readonly<Record<string, { received: number; answered: number } | undefined>> }[];
  /** The step's tally label. */
  label: string;
  /** `--target` engines: their counters and the client's totals before and after the step. */
  vllm?: { before: VllmCounters; after: VllmCounters; clientStart: ClientTotals; clientEnd: ClientTotals };
}

/**
 * A step's books against the best source there is: the engines' tallies for the step's label (embedded fake-vllm),
 * vLLM's counters diffed across the step (`--target`), else the client's own counts alone.
 */
export function reconcileStep(client: ClientCounts, sources: StepBookSources): StepAccounting {
  if (sources.engines) {
    const engineTally = { received: 0, answered: 0 };
    for (const engine of sources.engines) {
      engineTally.received += engine.tallies[sources.label]?.received ?? 0;
      engineTally.answered += engine.tallies[sources.label]?.answered ?? 0;
    }
    return reconcileWithTallies(client, engineTally);
  }
  const vllm = sources.vllm;
  if (vllm) return reconcileWithVllmMetrics(client, vllm.before, vllm.after, vllm.clientStart, vllm.clientEnd);
  return reconcileClientOnly(client);
}

/** Books with no engine-side source (a target without `/metrics`): the client's dispatches against its outcomes. */
export function reconcileClientOnly(client: ClientCounts): StepAccounting {
  const { difference, notes } = outcomeNotes(client);
  return close(
    {
      source: 'none',
      ...client,
      engineReceived: null,
      engineAnswered: null,
      engineFinished: null,
      engineInFlightAtStart: null,
      engineInFlightAtEnd: null,
      clientAnsweredBetween: null,
      clientInFlightAtStart: null,
      clientInFlightAtEnd: null,
      outcomeDifference: difference,
      answeredDifference: null,
      receivedDifference: null,
    },
    notes,
  );
}

/**
 * Sums the counters the books need from a Prometheus text body in vLLM's names (`vllm/v1/metrics/loggers.py`:
 * `vllm:request_success` counter with `finished_reason`, gauges `vllm:num_requests_running` and
 * `vllm:num_requests_waiting`). Undefined when the body has no `vllm:request_success_total` series.
 */
export function parseVllmCounters(text: string): VllmCounters | undefined {
  const finished: Record<string, number> = {};
  let inFlight = 0;
  let seen = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith('vllm:')) continue;
    const match = /^(vllm:[a-z_]+)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const [, name, labels = '', rawValue] = match;
    const value = Number(rawValue);
    if (!Number.isFinite(value)) continue;
    if (name === 'vllm:request_success_total') {
      const reason = /finished_reason="([^"]*)"/.exec(labels)?.[1] ?? 'unknown';
      finished[reason] = (finished[reason] ?? 0) + value;
      seen = true;
    } else if (name === 'vllm:num_requests_running' || name === 'vllm:num_requests_waiting') {
      inFlight += value;
    }
  }
  return seen ? { finished, inFlight } : undefined;
}

/** Most bytes of `/metrics` read from one engine (a real vLLM's is ~100 kB). */
const MAX_METRICS_BYTES = 8 * 1024 * 1024;

/**
 * Reads every target's `/metrics` and sums {@link VllmCounters}; undefined when any target does not serve vLLM's
 * counters (then the step's books are the client's only, and say so).
 */
export async function scrapeVllmCounters(
  targets: readonly string[],
  apiKey: string | undefined,
  timeoutMs = 5000,
): Promise<VllmCounters | undefined> {
  const parts = await Promise.all(
    targets.map(async (target) => {
      try {
        const response = await request(`${target.replace(/\/+$/, '')}/metrics`, {
          headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
          signal: AbortSignal.timeout(timeoutMs),
        });
        if (response.statusCode !== 200) {
          await response.body.dump();
          return undefined;
        }
        const chunks: Buffer[] = [];
        let bytes = 0;
        for await (const chunk of response.body) {
          bytes += (chunk as Buffer).length;
          if (bytes > MAX_METRICS_BYTES) {
            response.body.destroy();
            return undefined;
          }
          chunks.push(chunk as Buffer);
        }
        return parseVllmCounters(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return undefined;
      }
    }),
  );
  if (parts.some((part) => part === undefined)) return undefined;
  const total: VllmCounters = { finished: {}, inFlight: 0 };
  for (const part of parts as VllmCounters[]) {
    total.inFlight += part.inFlight;
    for (const [reason, count] of Object.entries(part.finished))
      total.finished[reason] = (total.finished[reason] ?? 0) + count;
  }
  return total;
}

/**
 * The books over the whole run, for the CLI's last line: how many steps balanced, which did not and by how much, and
 * the requests sent but never counted (from the independent counts: dispatches minus outcomes minus unsettled).
 */
export function runBooksLine(steps: ReadonlyArray<{ concurrency: number; accounting?: StepAccounting }>): string {
  const kept = steps.filter((step) => step.accounting !== undefined);
  const off = kept.filter((step) => step.accounting!.offBy > 0);
  const lost = kept.reduce((total, step) => total + Math.max(0, step.accounting!.outcomeDifference), 0);
  const twice = kept.reduce((total, step) => total + Math.max(0, -step.accounting!.outcomeDifference), 0);
  const balance =
    off.length === 0
      ? `books balance in all ${kept.length} step(s)`
      : `BOOKS OFF in ${off.length} of ${kept.length} step(s) (${off.map((step) => `${step.concurrency}: by ${step.accounting!.offBy}`).join(', ')})`;
  return `${balance}; requests sent but never counted: ${lost}${twice ? `; outcomes counted twice: ${twice}` : ''}`;
}
