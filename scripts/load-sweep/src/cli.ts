#!/usr/bin/env node
import { runBooksLine } from './accounting.js';
import { LiveView } from './live.js';
import { parseSweepArgs, SweepConfigError, usage } from './options.js';
import { runSweep, SweepIncompleteError } from './sweep.js';

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parseSweepArgs>;
  try {
    parsed = parseSweepArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`load-sweep: ${(error as Error).message} (--help lists every flag)\n`);
    process.exit(2);
  }
  if (parsed.help) {
    process.stdout.write(usage());
    return;
  }
  const started = performance.now();
  const view = new LiveView(process.stdout);
  // The first SIGINT/SIGTERM stops the sweep and still writes what was measured; a second one quits at once.
  const stop = new AbortController();
  const onSignal = (name: NodeJS.Signals) => {
    if (stop.signal.aborted) process.exit(130);
    view.log(`${name}: stopping; writing what was measured (${name} again to quit now)`);
    stop.abort(name);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let summary: Awaited<ReturnType<typeof runSweep>>;
  try {
    summary = await runSweep(
      parsed.options,
      (line) => view.log(line),
      (state) => view.update(state),
      undefined,
      stop.signal,
    );
  } finally {
    view.clear();
  }
  process.stdout.write(
    `done in ${((performance.now() - started) / 1000).toFixed(0)} s; ${runBooksLine(summary.steps)}\n`,
  );
}

main().catch((error: unknown) => {
  if (error instanceof SweepConfigError) {
    process.stderr.write(`load-sweep: ${error.message}\n`);
    process.exit(2);
  }
  if (error instanceof SweepIncompleteError) {
    // summary.json and report.html are written: the steps measured before, and the one that could not measure.
    const outDir = (error.summary.options as { outDir: string }).outDir;
    process.stderr.write(`load-sweep: stopped, ${error.message}; results so far in ${outDir}/summary.json\n`);
    process.exit(1);
  }
  process.stderr.write(`load-sweep: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
