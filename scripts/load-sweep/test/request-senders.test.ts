import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startFakeVllm } from 'fake-vllm';
import { expect, it } from 'vitest';
import { parseSweepArgs } from '../src/options.js';
import { DirectSender } from '../src/request-senders.js';
import { expectedOutput, RequestSource } from '../src/request-source.js';

const directOptions = parseSweepArgs(['--mode', 'direct', '--endpoint', 'generate', '--output-tokens', '6']).options;

it('direct mode: a generate stream from fake-vllm is read whole and verifies', async () => {
  const fleet = await startFakeVllm({ engines: 1, ttftMs: 1, itlMs: 1, control: false });
  const sender = new DirectSender(
    directOptions,
    fleet.engines.map((engine) => engine.url),
  );
  try {
    const request = new RequestSource(directOptions, 0).next(undefined, undefined);
    const outcome = await sender.send(request, 0, undefined);
    expect(outcome).toMatchObject({ ok: true, errorKind: undefined, attempts: 1 });
    expect(outcome.tokenIds).toEqual(expectedOutput(request).tokenIds);
    expect(outcome.gapsMs).toHaveLength(outcome.tokenIds.length - 1);
  } finally {
    await sender.close();
    await fleet.close();
  }
});

it('direct mode: SSE with CRLF line ends, split inside a CRLF and inside an event, is parsed like LF', async () => {
  // Servers may end SSE lines with CRLF (the spec allows LF, CRLF and CR); splitting on "\n\n" saw no event at all.
  const request = new RequestSource(directOptions, 0).next(undefined, undefined);
  const { tokenIds } = expectedOutput(request);
  const events = tokenIds.map((id) => `data: ${JSON.stringify({ choices: [{ index: 0, token_ids: [id] }] })}\r\n\r\n`);
  const body = `${events.join('')}data: [DONE]\r\n\r\n`;
  const server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' });
    // Cut between CR and LF, and in the middle of a JSON payload.
    const cuts = [body.indexOf('\r\n') + 1, body.indexOf('token_ids') + 3, body.length];
    let at = 0;
    const next = () => {
      const cut = cuts.shift();
      if (cut === undefined) return void response.end();
      response.write(body.slice(at, cut));
      at = cut;
      setTimeout(next, 5);
    };
    next();
  }).listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sender = new DirectSender(directOptions, [`http://127.0.0.1:${(server.address() as AddressInfo).port}`]);
  try {
    const outcome = await sender.send(request, 0, undefined);
    expect(outcome).toMatchObject({ ok: true, errorKind: undefined });
    expect(outcome.tokenIds).toEqual(tokenIds);
  } finally {
    await sender.close();
    server.close();
  }
});
