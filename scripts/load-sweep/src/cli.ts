#!/usr/bin/env node
import { LiveView } from './live.js';
import { parseSweepArgs, SweepConfigError, usage } from './options.js';
import { runSweep } from './sweep.js';

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parseSweepArgs>;
  try {
    parsed = parseSweepArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`load-sweep: ${(error as Error).message}\n\n${usage()}`);
    process.exit(2);
  }
  if (parsed.help) {
    process.stdout.write(usage());
    return;
  }
  const started = performance.now();
  const view = new LiveView(process.stdout);
  const summary = await runSweep(
    parsed.options,
    (line) => view.log(line),
    (state) => view.update(state),
  );
  view.clear();
  const lost = summary.steps.reduce((total, step) => total + (step.sent - step.completed - step.failed), 0);
  process.stdout.write(
    `done in ${((performance.now() - started) / 1000).toFixed(0)} s; unaccounted requests: ${lost}\n`,
  );
}

main().catch((error: unknown) => {
  if (error instanceof SweepConfigError) {
    process.stderr.write(`load-sweep: ${error.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`load-sweep: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
