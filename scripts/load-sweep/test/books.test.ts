import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { parseSweepArgs } from '../src/options.js';
import { runSweep } from '../src/sweep.js';

const misbehaving = fileURLToPath(new URL('./fixtures/misbehaving-worker.mjs', import.meta.url));

it('the books catch a lost outcome, an outcome counted twice and a request sent twice, each in its own step, by exactly that much', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sweep-books-'));
  const { options } = parseSweepArgs([
    '--steps',
    '10,10,10,10',
    '--ramp-ms',
    '100',
    '--warmup-ms',
    '200',
    '--measure-ms',
    '700',
    '--fake-ttft-ms',
    '10',
    '--fake-itl-ms',
    '5',
    '--workers',
    '1',
    '--max-error-rate',
    '1',
    '--out',
    out,
  ]);
  const summary = await runSweep(options, () => {}, undefined, {
    entry: misbehaving,
    args: ['drop:0:3,twice:1:2,resend:2:4'],
  });
  const books = summary.steps.map((step) => step.accounting!);
  expect(books.map((step) => step.source)).toEqual(Array(4).fill('fake-vllm tallies'));
  // Step 0: 3 requests sent and answered by the engines, whose outcomes the client never counted.
  expect(books[0]).toMatchObject({ outcomeDifference: 3, answeredDifference: 3, receivedDifference: 3, offBy: 3 });
  // Step 1: 2 outcomes counted twice (their attempts too).
  expect(books[1]).toMatchObject({ outcomeDifference: -2, answeredDifference: -2, receivedDifference: -2, offBy: 2 });
  // Step 2: 4 requests sent twice and counted once: the client's own books balance, the engines' do not.
  expect(books[2]).toMatchObject({ outcomeDifference: 0, answeredDifference: 4, receivedDifference: 4, offBy: 4 });
  // Step 3: nothing wrong.
  expect(books[3]).toMatchObject({ outcomeDifference: 0, answeredDifference: 0, receivedDifference: 0, offBy: 0 });
  expect(books[3]!.engineReceived).toBe(books[3]!.sent);
  for (const [index, offBy] of [3, 2, 4].entries()) {
    expect(summary.steps[index]!.valid).toBe(false);
    expect(summary.steps[index]!.invalidReason).toContain(`books off by ${offBy}:`);
  }
  expect(summary.steps[3]!.invalidReason ?? '').not.toContain('books off');
});
