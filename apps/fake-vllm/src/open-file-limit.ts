import { readdirSync, readFileSync } from 'node:fs';
import { FakeVllmConfigError } from './errors.js';

/**
 * Descriptors a serving process needs besides its engines': Node's own (22 in a fresh `fake-vllm` here: stdio,
 * epoll, eventfds, libuv pipes), the control channel and its clients, a child's IPC channel, files it reads.
 */
export const RESERVED_FILES = 64;

/** Each engine holds its listening socket and, to serve anything, at least one connection. */
export const FILES_PER_ENGINE = 2;

/**
 * This process's limit on open files (the soft `RLIMIT_NOFILE`, what `ulimit -n` shows; Node raises it to the hard
 * limit at start), read from `/proc/self/limits`. Undefined where there is none to read (not Linux) or no limit.
 */
export function openFileLimit(): number | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return undefined;
  }
  const match = /^Max open files\s+(\d+)/m.exec(text);
  return match ? Number(match[1]) : undefined;
}

/** Descriptors this process holds now (`/proc/self/fd`), or undefined where that cannot be read. */
function openFiles(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}

/**
 * Refuses, before anything is started, a deployment whose engines cannot each hold a listening socket and one
 * connection within the open-file limit: past it, listen() fails with EMFILE only after thousands of engines were
 * built (`--engines 30000` took 23 s; `--engines 100000` 40 s and 1.9 GB). Children (`processes` > 0) inherit the
 * limit and start with only Node's own descriptors; in this process, those already open count too.
 * Throws {@link FakeVllmConfigError} with `field: 'engines'`.
 */
export function checkOpenFileLimit(
  options: { engines: number; processes: number; sharePort: boolean },
  files: { limit: number | undefined; inUse: number } = {
    limit: openFileLimit(),
    inUse: options.processes > 0 ? 0 : (openFiles() ?? 0),
  },
): void {
  const { limit, inUse } = files;
  if (limit === undefined) return;
  const { engines, processes, sharePort } = options;
  const children = Math.min(processes, engines);
  const perProcess = processes === 0 ? engines : sharePort ? 1 : Math.ceil(engines / children);
  const most = Math.max(0, Math.floor((limit - inUse - RESERVED_FILES) / FILES_PER_ENGINE));
  if (perProcess <= most) return;
  const spread = processes === 0 ? '' : ` (${perProcess} in each of ${children} processes)`;
  throw new FakeVllmConfigError(
    `Expected \`engines\` to fit the open-file limit of ${limit} (ulimit -n): each engine holds a listening socket and at least one connection, so one process serves at most ${most}, got ${engines}${spread}; raise the limit or spread the engines over more child processes`,
    { field: 'engines' },
  );
}
