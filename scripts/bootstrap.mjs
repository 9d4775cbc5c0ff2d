#!/usr/bin/env node
// Runs a root task on a machine that has only Node and npm: finds pnpm (or fetches pnpm@10 through npx),
// installs the workspace when node_modules is missing or older than the lockfile, then runs the task with
// the workspace's binaries on PATH. `npm run sweep` and `pnpm sweep` both land here.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [task, ...rest] = process.argv.slice(2);

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: root, ...options });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function pnpmCommand() {
  const probe = spawnSync('pnpm', ['--version'], { encoding: 'utf8' });
  if (probe.status === 0 && /^10\./.test(probe.stdout.trim())) return ['pnpm'];
  return ['npx', '-y', 'pnpm@10'];
}

function needsInstall() {
  const marker = join(root, 'node_modules', '.modules.yaml');
  if (!existsSync(marker)) return true;
  return statSync(join(root, 'pnpm-lock.yaml')).mtimeMs > statSync(marker).mtimeMs;
}

const pnpm = pnpmCommand();
const pnpmRun = (args) => run(pnpm[0], [...pnpm.slice(1), ...args]);

if (needsInstall()) {
  const frozen = process.env.CI ? ['--frozen-lockfile'] : [];
  const status = pnpmRun(['install', ...frozen]);
  if (status !== 0) process.exit(status);
}
if (!task) process.exit(0);

const bin = join(root, 'node_modules', '.bin');
const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` };

let status;
switch (task) {
  case 'sweep':
    status = run('turbo', ['run', 'build', '--filter=load-sweep...', '--output-logs=errors-only'], { env });
    if (status === 0) status = run('node', [join(root, 'scripts/load-sweep/dist/cli.js'), ...rest], { env });
    break;
  case 'bench':
    status = run('turbo', ['run', 'build', '--output-logs=errors-only'], { env });
    if (status === 0) status = pnpmRun(['--filter', 'remote-inference-client', 'run', 'bench', ...rest]);
    break;
  default:
    status = run(task, rest, { env });
}
process.exit(status);
