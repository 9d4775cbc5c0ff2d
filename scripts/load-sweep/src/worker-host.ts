import { performance } from 'node:perf_hooks';
import { LoadGenerator, type LoadGeneratorSeam } from './load-generator.js';
import { type FromWorker, isToWorker, type ToWorker } from './worker-protocol.js';

/** The IPC end of a worker process: what {@link runWorker} needs of `process`. */
export interface WorkerChannel {
  on(event: 'message', listener: (message: unknown) => void): unknown;
  send?(message: FromWorker): unknown;
}

/**
 * Serves the coordinator's messages with one {@link LoadGenerator} (created on `init`), and reports progress every
 * second. Call it from a worker process's entry: nothing happens on import.
 */
export function runWorker(
  channel: WorkerChannel = process as WorkerChannel,
  seam: LoadGeneratorSeam = {},
  exit: (code: number) => void = (code) => process.exit(code),
): void {
  let generator: LoadGenerator | undefined;
  let progressTimer: NodeJS.Timeout | undefined;
  const send = (message: FromWorker) => channel.send!(message);
  const handle = async (message: ToWorker): Promise<void> => {
    if (message.type === 'init') {
      generator = new LoadGenerator(message, seam);
      let cpu = process.cpuUsage();
      let at = performance.now();
      progressTimer = setInterval(() => {
        const now = performance.now();
        const usage = process.cpuUsage(cpu);
        send(generator!.progress(((usage.user + usage.system) / 1000 / (now - at)) * 100));
        cpu = process.cpuUsage();
        at = now;
      }, 1000);
      progressTimer.unref();
      send({ type: 'ready' });
      return;
    }
    if (generator === undefined) throw new Error(`sweep worker got \`${message.type}\` before \`init\``);
    switch (message.type) {
      case 'concurrency':
        await generator.setConcurrency(message.target, message.rampMs);
        send({ type: 'ramped' });
        return;
      case 'rate':
        generator.setRate(message.rate, message.maxInFlight);
        send({ type: 'ramped' });
        return;
      case 'measure-start':
        generator.startMeasure(message.step);
        return;
      case 'measure-end':
        send(await generator.endMeasure(message.step));
        return;
      case 'rollout-step':
        send(await generator.rolloutStep(message));
        return;
      case 'totals':
        send({ type: 'totals', worker: generator.worker, totals: generator.totalsNow() });
        return;
      case 'stop':
        clearInterval(progressTimer);
        await generator.stop();
        exit(0);
        return;
    }
  };
  channel.on('message', (message) => {
    if (!isToWorker(message)) return;
    handle(message).catch((error: unknown) => {
      process.stderr.write(`sweep worker: ${(error as Error).stack ?? String(error)}\n`);
      exit(1);
    });
  });
}
