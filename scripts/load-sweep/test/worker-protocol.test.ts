import { EventEmitter } from 'node:events';
import { expect, it } from 'vitest';
import { runWorker } from '../src/worker-host.js';
import { type FromWorker, isFromWorker, isToWorker } from '../src/worker-protocol.js';

it('the guards accept each side its own messages and nothing else', () => {
  expect(isToWorker({ type: 'measure-end', step: 1 })).toBe(true);
  expect(isToWorker({ type: 'totals' })).toBe(true);
  expect(isToWorker({ type: 'step-result' })).toBe(false);
  expect(isFromWorker({ type: 'step-result' })).toBe(true);
  expect(isFromWorker({ type: 'init' })).toBe(false);
  for (const junk of [null, undefined, 3, 'init', {}, { type: 7 }]) {
    expect(isToWorker(junk)).toBe(false);
    expect(isFromWorker(junk)).toBe(false);
  }
});

it('a worker host does nothing until told, ignores what is not the protocol, and exits 1 on a message before init', async () => {
  const channel = new EventEmitter();
  const sent: FromWorker[] = [];
  const exits: number[] = [];
  const errors: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((text: string) => errors.push(text) > 0) as typeof process.stderr.write;
  try {
    runWorker(
      { on: (event, listener) => channel.on(event, listener), send: (message) => sent.push(message) },
      {},
      (code) => exits.push(code),
    );
    channel.emit('message', { hello: 'world' });
    channel.emit('message', { type: 'measure-start', step: 0 });
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.stderr.write = write;
  }
  expect(sent).toEqual([]);
  expect(exits).toEqual([1]);
  expect(errors.join('')).toContain('got `measure-start` before `init`');
});
