#!/usr/bin/env node
// Runs a root task on a machine that has only Node and npm.
//
// pnpm: a pnpm 10 on PATH is used as it is; otherwise the version pinned in package.json's `packageManager` is
// installed once into `.tools/pnpm` with npm (corepack fails here on registry signatures) and that directory is put
// first on PATH for every child, so turbo — which looks pnpm up on PATH and fails with "Unable to find package
// manager binary" when it is missing — finds the same pnpm the install used.
//
// Tests (`test`): the real-component tests need `redis-server`, `ip`/`unshare` and `chromium`, and Python with
// uvicorn, aiohttp and pytest. When one is missing and this runs as root with apt-get, it is installed; otherwise the
// run goes on, the tests that need it skip with their reason, and the end of the run names each skipped test and
// what to install, loudly. With CI=true a missing component is a failure, not a skip.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { missingComponents, systemComponents } from '../packages/test-support/src/components.mjs';
import { listBenchmarks } from './benchmarks.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [task, ...rest] = process.argv.slice(2);
const rootManifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const pnpmVersion = String(rootManifest.packageManager ?? 'pnpm@10').replace(/^pnpm@/, '');
const toolsBin = join(root, '.tools', 'pnpm', 'node_modules', '.bin');
const workspaceBin = join(root, 'node_modules', '.bin');

function log(message) {
  process.stderr.write(`bootstrap: ${message}\n`);
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: root, env, ...options });
  if (result.error) {
    log(`could not run ${command}: ${result.error.message}`);
    return 127;
  }
  return result.status ?? 1;
}

function pnpmOnPath(path) {
  const probe = spawnSync('pnpm', ['--version'], { encoding: 'utf8', env: { ...process.env, PATH: path } });
  return probe.status === 0 && /^10\./.test(probe.stdout.trim());
}

/** A PATH on which `pnpm` is pnpm 10: the caller's, or the caller's behind a project-local install. */
function pathWithPnpm() {
  const inherited = process.env.PATH ?? '';
  if (pnpmOnPath(inherited)) return inherited;
  const withTools = `${toolsBin}:${inherited}`;
  if (existsSync(join(toolsBin, 'pnpm')) && pnpmOnPath(withTools)) return withTools;
  log(`pnpm 10 is not on PATH: installing pnpm@${pnpmVersion} into .tools/pnpm (once)`);
  rmSync(join(root, '.tools', 'pnpm'), { recursive: true, force: true });
  mkdirSync(join(root, '.tools', 'pnpm'), { recursive: true });
  const install = spawnSync(
    'npm',
    [
      'install',
      '--no-save',
      '--no-package-lock',
      '--no-audit',
      '--no-fund',
      '--loglevel=error',
      '--prefix',
      '.tools/pnpm',
      `pnpm@${pnpmVersion}`,
    ],
    { stdio: 'inherit', cwd: root },
  );
  if (install.status !== 0 || !pnpmOnPath(withTools)) {
    log(
      `could not install pnpm@${pnpmVersion} with npm; install it yourself (npm install -g pnpm@${pnpmVersion}) and retry`,
    );
    process.exit(1);
  }
  return withTools;
}

const env = {
  ...process.env,
  PATH: `${workspaceBin}:${pathWithPnpm()}`,
  TURBO_TELEMETRY_DISABLED: '1',
  DO_NOT_TRACK: '1',
};

function needsInstall() {
  const marker = join(root, 'node_modules', '.modules.yaml');
  if (!existsSync(marker)) return true;
  return statSync(join(root, 'pnpm-lock.yaml')).mtimeMs > statSync(marker).mtimeMs;
}

if (needsInstall()) {
  const frozen = process.env.CI ? ['--frozen-lockfile'] : [];
  const status = run('pnpm', ['install', ...frozen]);
  if (status !== 0) process.exit(status);
}
if (!task) process.exit(0);

/** Installs the missing real-component dependencies with apt-get when this process may; returns what is still missing. */
function provisionTestComponents() {
  let missing = missingComponents();
  if (missing.length === 0) return missing;
  const packages = [...new Set(missing.map((component) => component.aptPackage))];
  const canApt = process.getuid?.() === 0 && spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0;
  if (canApt) {
    log(`installing for the real-component tests: ${packages.join(' ')} (apt-get)`);
    const aptEnv = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const update = spawnSync('apt-get', ['update', '-qq'], { stdio: ['ignore', 'ignore', 'inherit'], env: aptEnv });
    const install = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...packages], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: aptEnv,
    });
    if (update.status !== 0 || install.status !== 0) log('apt-get failed; the tests that need these will skip');
    missing = missingComponents();
  }
  return missing;
}

function banner(lines) {
  const rule = '!'.repeat(100);
  process.stderr.write(`\n${rule}\n${lines.map((line) => `!! ${line}`).join('\n')}\n${rule}\n\n`);
}

let status;
switch (task) {
  case 'test': {
    const missing = provisionTestComponents();
    const skipLog = join(tmpdir(), `rig-skipped-${process.pid}.log`);
    rmSync(skipLog, { force: true });
    if (missing.length > 0) {
      banner([
        'Real-component tests will SKIP: these are not installed and could not be installed here:',
        ...missing.map(
          (component) =>
            `  ${component.name} — apt-get install ${component.aptPackage} — needed by ${component.usedBy}`,
        ),
      ]);
    }
    const testEnv = { ...env, RIG_SKIP_LOG: skipLog };
    status = run('turbo', ['run', 'build', 'typecheck', 'test', '--concurrency=1'], { env: testEnv });
    if (status === 0) status = run('biome', ['check', '.']);
    const skipped = existsSync(skipLog) ? readFileSync(skipLog, 'utf8').trim().split('\n') : [];
    if (skipped.length > 0) {
      banner([`${skipped.length} test group(s) SKIPPED:`, ...skipped.map((line) => `  ${line}`)]);
      if (process.env.CI && status === 0) {
        log('CI=true: a skipped real-component test is a failure');
        status = 1;
      }
    }
    rmSync(skipLog, { force: true });
    break;
  }
  case 'test-components': {
    const missing = provisionTestComponents();
    for (const component of systemComponents) {
      const gone = missing.includes(component);
      process.stdout.write(
        `${gone ? 'missing' : 'ok     '} ${component.name} (${component.aptPackage}) — ${component.usedBy}\n`,
      );
    }
    status = missing.length === 0 ? 0 : 1;
    break;
  }
  case 'sweep':
    status = run('turbo', ['run', 'build', '--filter=load-sweep...', '--output-logs=errors-only']);
    if (status === 0) status = run('node', [join(root, 'scripts/load-sweep/dist/cli.js'), ...rest]);
    break;
  case 'bench':
  case 'bench:rollouts': {
    // `bench [NAME...] [-- FLAGS]`: every package's `bench:<name>` script (or the named ones), one after another —
    // benchmarks measure the machine, so never two at once; FLAGS go to each. `bench --list` lists them and checks
    // that every bench/*.mjs entry is wired and writes its JSON. `bench:rollouts` is `bench rollouts`.
    const { benchmarks, problems } = listBenchmarks(root);
    for (const problem of problems) log(`benchmark wiring: ${problem}`);
    const split = rest.indexOf('--');
    const names = task === 'bench' ? (split === -1 ? rest : rest.slice(0, split)) : [task.slice('bench:'.length)];
    const flags = task === 'bench' ? (split === -1 ? [] : rest.slice(split + 1)) : rest;
    if (names.includes('--list')) {
      for (const benchmark of benchmarks)
        process.stdout.write(`${benchmark.name.padEnd(20)} ${benchmark.packageName}: ${benchmark.command}\n`);
      status = problems.length === 0 ? 0 : 1;
      break;
    }
    const unknown = names.filter((name) => !benchmarks.some((benchmark) => benchmark.name === name));
    if (problems.length > 0 || unknown.length > 0) {
      if (unknown.length > 0)
        log(
          `unknown benchmark ${unknown.join(', ')}; known: ${benchmarks.map((benchmark) => benchmark.name).join(', ')}`,
        );
      status = 1;
      break;
    }
    status = run('turbo', ['run', 'build', '--output-logs=errors-only']);
    const chosen = benchmarks.filter((benchmark) => names.length === 0 || names.includes(benchmark.name));
    const outcomes = [];
    for (const benchmark of chosen) {
      if (status !== 0) break;
      log(
        `benchmark ${benchmark.name} (${benchmark.packageName}): ${benchmark.command}${flags.length ? ` ${flags.join(' ')}` : ''}`,
      );
      status = run('pnpm', ['--filter', benchmark.packageName, 'run', `bench:${benchmark.name}`, ...flags]);
      outcomes.push(`${benchmark.name}: ${status === 0 ? 'ok' : `failed (exit ${status})`}`);
    }
    if (outcomes.length > 0) log(`benchmarks: ${outcomes.join(', ')}`);
    break;
  }
  default:
    status = run(task, rest);
}
process.exit(status);
