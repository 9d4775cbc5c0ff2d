import { describe, expect, it } from 'vitest';
import {
  parseVllmCounters,
  reconcileWithTallies,
  reconcileWithVllmMetrics,
  runBooksLine,
  type StepAccounting,
} from '../src/accounting.js';
import type { ClientTotals } from '../src/worker-protocol.js';

const client = (overrides: Partial<Parameters<typeof reconcileWithTallies>[0]> = {}) => ({
  sent: 100,
  outcomes: 100,
  unsettled: 0,
  answered: 98,
  attempts: 110,
  staleRetries: 4,
  connectErrors: 0,
  ...overrides,
});

describe('books against fake-vllm tallies', () => {
  it('balance when the engines received every attempt (stale re-sends may or may not arrive) and answered what the client got', () => {
    for (const received of [110, 112, 114]) {
      expect(reconcileWithTallies(client(), { received, answered: 98 })).toMatchObject({ offBy: 0, explanation: null });
    }
  });

  it('say by how much and why when they do not', () => {
    const lost = reconcileWithTallies(client({ outcomes: 97, answered: 95, attempts: 107 }), {
      received: 110,
      answered: 98,
    });
    expect(lost).toMatchObject({ outcomeDifference: 3, answeredDifference: 3, receivedDifference: 0, offBy: 3 });
    expect(lost.explanation).toContain('3 requests lost');
    const hidden = reconcileWithTallies(client(), { received: 119, answered: 103 });
    expect(hidden).toMatchObject({ outcomeDifference: 0, answeredDifference: 5, receivedDifference: 5, offBy: 5 });
    const unreached = reconcileWithTallies(client(), { received: 108, answered: 98 });
    expect(unreached).toMatchObject({ receivedDifference: -2, offBy: 2 });
  });

  it('allow for attempts whose connect failed (an engine restarting refuses them): those never reached an engine', () => {
    const restarted = client({ connectErrors: 3 });
    expect(reconcileWithTallies(restarted, { received: 107, answered: 98 })).toMatchObject({ offBy: 0 });
    // Not one more: a fourth missing receipt is an attempt that vanished.
    expect(reconcileWithTallies(restarted, { received: 106, answered: 98 })).toMatchObject({
      receivedDifference: -1,
      offBy: 1,
    });
  });
});

describe('books against vLLM counters', () => {
  // The series as vLLM writes them (vllm/v1/metrics/loggers.py: vllm:request_success by finished_reason, the
  // running and waiting gauges), for two engines.
  const metrics = (stop: number, length: number, abort: number, running: number, waiting: number) =>
    [
      '# HELP vllm:request_success_total Count of successfully processed requests.',
      '# TYPE vllm:request_success_total counter',
      ...['0', '1'].flatMap((engine) => [
        `vllm:request_success_total{engine="${engine}",finished_reason="stop",model_name="m"} ${stop / 2}`,
        `vllm:request_success_total{engine="${engine}",finished_reason="length",model_name="m"} ${length / 2}`,
        `vllm:request_success_total{engine="${engine}",finished_reason="abort",model_name="m"} ${abort / 2}`,
        `vllm:num_requests_running{engine="${engine}",model_name="m"} ${running / 2}`,
        `vllm:num_requests_waiting{engine="${engine}",model_name="m"} ${waiting / 2}`,
      ]),
    ].join('\n');
  const totals = (answered: number, inFlight: number): ClientTotals => ({
    dispatched: 0,
    answered,
    failed: 0,
    attempts: 0,
    staleRetries: 0,
    inFlight,
  });

  it('sums the series over engines and labels', () => {
    expect(parseVllmCounters(metrics(10, 20, 2, 6, 4))).toEqual({
      finished: { stop: 10, length: 20, abort: 2 },
      inFlight: 10,
    });
    expect(parseVllmCounters('# nothing here\nother_metric 1\n')).toBeUndefined();
  });

  it('balance within the requests in flight at the two boundaries, and not beyond', () => {
    const before = parseVllmCounters(metrics(0, 100, 0, 20, 0))!;
    const after = parseVllmCounters(metrics(0, 300, 2, 20, 0))!;
    const books = (clientBetween: number) =>
      reconcileWithVllmMetrics(client(), before, after, totals(1000, 20), totals(1000 + clientBetween, 30));
    expect(books(200)).toMatchObject({ offBy: 0, engineAnswered: 200, engineReceived: 202 });
    expect(books(170)).toMatchObject({ offBy: 0 }); // 30 in flight at the end may be answered, not yet received
    expect(books(165)).toMatchObject({ answeredDifference: 5, offBy: 5 });
    expect(books(220)).toMatchObject({ offBy: 0 }); // 20 in flight at the start
    expect(books(223)).toMatchObject({ answeredDifference: -3, offBy: 3 });
  });
});

it('the run line sums requests sent but never counted from the independent counts', () => {
  const step = (concurrency: number, outcomeDifference: number, offBy: number) => ({
    concurrency,
    accounting: { outcomeDifference, offBy } as StepAccounting,
  });
  expect(runBooksLine([step(10, 0, 0), step(20, 0, 0)])).toBe(
    'books balance in all 2 step(s); requests sent but never counted: 0',
  );
  expect(runBooksLine([step(10, 3, 3), step(20, -2, 2), step(30, 0, 0)])).toBe(
    'BOOKS OFF in 2 of 3 step(s) (10: by 3, 20: by 2); requests sent but never counted: 3; outcomes counted twice: 2',
  );
});
