import { type ChildProcess, execFileSync, fork } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { EngineGroup, ProcessStats } from './engine-group.js';
import type { EngineStats } from './engine-server.js';
import { FakeVllmConfigError } from './errors.js';
import { FAULT_NAMES, type FaultName, type FaultProfile } from './faults.js';
import type {
  CapacityOptions,
  EnginePlacement,
  LatencyOptions,
  PerEngineOptions,
  ResolvedEngineOptions,
  RestartOptions,
} from './options.js';

/** Messages a child sends its parent. */
export type ChildMessage =
  | { type: 'ready'; urls: string[] }
  | { type: 'start-error'; message: string; code?: string | undefined }
  | { type: 'result'; id: number; value?: unknown; error?: string };

/** Messages a parent sends a child. */
export type ParentMessage =
  | {
      type: 'start';
      options: ResolvedEngineOptions;
      host: string;
      ports: number[];
      placement: EnginePlacement;
    }
  | { type: 'call'; id: number; method: keyof EngineGroup; args: unknown[] };

function childEntry(): string {
  // Under vitest this module runs from src/*.ts; the child must run the compiled JavaScript.
  const here = fileURLToPath(import.meta.url);
  return here.endsWith('.ts')
    ? fileURLToPath(new URL('../dist/child.js', import.meta.url))
    : fileURLToPath(new URL('./child.js', import.meta.url));
}

class ChildHandle {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  urls: string[] = [];
  /** Global indices of this child's engines, in the child's own order. */
  readonly engines: number[] = [];
  /** How the child ended, once it has. */
  exit: string | undefined;
  /** The last stats this child reported: what its engines show once it is gone. */
  lastStats: ProcessStats[] = [];

  constructor(readonly child: ChildProcess) {
    child.on('message', (message: ChildMessage) => {
      if (message.type !== 'result') return;
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.error !== undefined) waiter.reject(new Error(message.error));
      else waiter.resolve(message.value);
    });
    // A send to a child that just died fails on the channel; unhandled, that 'error' would end this process.
    child.on('error', () => {});
    child.on('exit', (code, signal) => {
      this.exit = signal === null ? `code ${code}` : `signal ${signal}`;
      for (const waiter of this.pending.values()) {
        waiter.reject(new Error(`fake-vllm child ${child.pid} exited (${this.exit})`));
      }
      this.pending.clear();
    });
  }

  get alive(): boolean {
    return this.exit === undefined && this.child.connected;
  }

  call(method: keyof EngineGroup, args: unknown[]): Promise<unknown> {
    if (!this.alive) {
      return Promise.reject(new Error(`fake-vllm child ${this.child.pid} exited (${this.exit ?? 'disconnected'})`));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ type: 'call', id, method, args } satisfies ParentMessage, (error) => {
        if (!error) return;
        this.pending.delete(id);
        reject(error);
      });
    });
  }

  /** This child's engines as stats: live when it answers, else marked down with their last counters. */
  async stats(): Promise<ProcessStats[]> {
    if (this.alive) {
      try {
        this.lastStats = (await this.call('stats', [])) as ProcessStats[];
        return this.lastStats;
      } catch {
        // It died while answering: report it down below.
      }
    }
    const last = this.lastStats.flatMap((process) => process.engines);
    const engines = this.urls.map((url, local) => downEngine(url, this.child.pid ?? 0, last[local]));
    return [{ engines, maxConcurrent: 0, eventLoopLagP99Ms: 0 }];
  }
}

/** A dead engine's entry: nothing running or open, counters as last read. */
function downEngine(url: string, pid: number, last: EngineStats | undefined): EngineStats {
  const faults = Object.fromEntries(FAULT_NAMES.map((name) => [name, 0])) as Record<FaultName, number>;
  const counters = last ?? {
    maxRunning: 0,
    maxConcurrent: 0,
    connectionsTotal: 0,
    requests: 0,
    completed: 0,
    aborted: 0,
    cancelled: 0,
    promptTokens: 0,
    generationTokens: 0,
    faults,
    tallies: {},
    paused: false,
    sleeping: false,
    maxNumSeqs: 0,
    itlMs: 0,
    ttftMs: 0,
    kvCacheBlocks: 0,
    cachedBlocks: 0,
    evictedBlocks: 0,
    prefixCacheQueryTokens: 0,
    prefixCacheHitTokens: 0,
    restarts: 0,
    droppedByRestart: 0,
  };
  return {
    ...counters,
    url,
    pid,
    down: true,
    connectionsOpen: 0,
    running: 0,
    waiting: 0,
    kvCacheUsage: 0,
    restarting: false,
  };
}

/**
 * Engines spread over child processes (each process can hold ~20,000 descriptors here, so 10,000+ connections
 * need more than one). The parent only relays control calls and gathers stats.
 */
export class ChildEngineGroup implements EngineGroup {
  readonly urls: string[] = [];
  /** Engine index -> [child, index inside that child]. */
  private readonly placement: Array<[ChildHandle, number]> = [];
  private closing = false;

  private constructor(
    private readonly children: ChildHandle[],
    private readonly log: (line: string) => void,
  ) {}

  /** Forks `processes` children and starts engine i in child i % processes. */
  static async start(
    options: ResolvedEngineOptions,
    host: string,
    ports: number[],
    processes: number,
    {
      sharePort = false,
      nice = 0,
      idleScheduling = false,
      perEngine = [],
      log = (line: string) => process.stderr.write(`fake-vllm: ${line}\n`),
    }: {
      sharePort?: boolean;
      nice?: number;
      /** SCHED_IDLE for the children (see `FakeVllmOptions.idleScheduling`). @default false */
      idleScheduling?: boolean;
      /** Overrides by engine index (`perEngine` of the options). @default [] */
      perEngine?: readonly PerEngineOptions[];
      /** Where the one line about a child that died goes. @default stderr */
      log?: (line: string) => void;
    } = {},
  ): Promise<ChildEngineGroup> {
    let shared: Server | undefined;
    if (sharePort) {
      // One listening socket, accepted on by every child: one engine address served by several processes
      // (Node 20 has no SO_REUSEPORT). The parent holds only this one descriptor.
      shared = createServer();
      shared.listen({ port: ports[0] ?? 0, host, backlog: options.backlog });
      await once(shared, 'listening');
      ports = Array.from({ length: processes }, () => 0);
    }
    const count = Math.min(processes, ports.length);
    const handles: ChildHandle[] = [];
    const assigned: number[][] = Array.from({ length: count }, () => []);
    for (let index = 0; index < ports.length; index++) assigned[index % count]!.push(index);
    for (let index = 0; index < count; index++) {
      const child = fork(childEntry(), [], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        serialization: 'advanced',
      });
      handles.push(new ChildHandle(child));
    }
    const group = new ChildEngineGroup(handles, log);
    try {
      for (const handle of handles) {
        if (idleScheduling && handle.child.pid !== undefined) setIdleScheduling(handle.child.pid);
        if (nice === 0 || handle.child.pid === undefined) continue;
        try {
          setPriority(handle.child.pid, nice);
        } catch (error) {
          throw new FakeVllmConfigError(
            `Cannot set \`nice\` to ${nice} (${(error as Error).message}): priorities below 0 need root or CAP_SYS_NICE`,
            { cause: error, field: 'nice' },
          );
        }
      }
      await Promise.all(
        handles.map(async (handle, index) => {
          const mine = assigned[index]!;
          handle.child.send(
            {
              type: 'start',
              options: { ...options },
              host,
              ports: mine.map((engine) => ports[engine]!),
              // With a shared port each process serves "the" engine: one override for all, else engine i's own.
              placement: { perEngine, engines: sharePort ? mine.map(() => 0) : mine },
            } satisfies ParentMessage,
            shared,
          );
          const [message] = (await Promise.race([
            once(handle.child, 'message'),
            once(handle.child, 'exit').then(() => [{ type: 'start-error', message: 'child exited during start' }]),
          ])) as [ChildMessage];
          if (message.type === 'start-error') {
            // Keep the code (EADDRINUSE, ...) so the CLI can tell a bad address from a bug.
            throw Object.assign(new Error(`fake-vllm child failed to start: ${message.message}`), {
              code: message.code,
            });
          }
          if (message.type !== 'ready') throw new Error(`fake-vllm child sent ${message.type} before ready`);
          handle.urls = message.urls;
        }),
      );
    } catch (error) {
      for (const handle of handles) handle.child.kill('SIGKILL');
      shared?.close();
      throw error;
    }
    // Every child holds its own duplicate of the listening socket now; the parent must not accept on it.
    shared?.close();
    const cursor = new Array<number>(count).fill(0);
    ports.forEach((_port, index) => {
      const handle = handles[index % count]!;
      const local = cursor[index % count]!++;
      group.placement.push([handle, local]);
      group.urls.push(handle.urls[local]!);
      handle.engines.push(index);
    });
    for (const handle of handles) handle.child.once('exit', () => group.onChildExit(handle));
    return group;
  }

  /** One line per dead child; its engines stay listed, marked `down`, and the other children keep serving. */
  private onChildExit(handle: ChildHandle): void {
    if (this.closing) return;
    const engines = handle.engines.map((index) => `${index} (${this.urls[index]})`).join(', ');
    const serving = this.children.filter((child) => child.alive).reduce((sum, child) => sum + child.engines.length, 0);
    this.log(
      `child process ${handle.child.pid} exited (${handle.exit}): engine${handle.engines.length === 1 ? '' : 's'} ${engines} down; ${serving} of ${this.urls.length} engines still serving`,
    );
  }

  async stats(): Promise<ProcessStats[]> {
    const all = await Promise.all(this.children.map((child) => child.stats()));
    return all.flat();
  }

  private async forEngines(method: keyof EngineGroup, engine: number | undefined, args: unknown[]): Promise<void> {
    if (engine === undefined) {
      const alive = this.children.filter((child) => child.alive);
      if (alive.length === 0) throw new Error('Every engine is down: all fake-vllm child processes have exited');
      await Promise.all(alive.map((child) => child.call(method, [...args, undefined])));
      return;
    }
    const place = this.placement[engine];
    if (!place) throw new RangeError(`Expected \`engine\` within 0..${this.placement.length - 1}, got ${engine}`);
    if (!place[0].alive) {
      throw new Error(`Engine ${engine} is down: its process ${place[0].child.pid} exited (${place[0].exit})`);
    }
    await place[0].call(method, [...args, place[1]]);
  }

  setFaultProfile(profile: FaultProfile | string, engine?: number): Promise<void> {
    return this.forEngines('setFaultProfile', engine, [profile]);
  }

  setLatency(latency: LatencyOptions, engine?: number): Promise<void> {
    return this.forEngines('setLatency', engine, [latency]);
  }

  setCapacity(capacity: CapacityOptions, engine?: number): Promise<void> {
    return this.forEngines('setCapacity', engine, [capacity]);
  }

  restartEngine(restart: RestartOptions, engine?: number): Promise<void> {
    return this.forEngines('restartEngine', engine, [restart]);
  }

  async resetHighWaterMarks(): Promise<void> {
    await Promise.all(
      this.children.filter((child) => child.alive).map((child) => child.call('resetHighWaterMarks', [])),
    );
  }

  async close(mode: 'drain' | 'abort', drainTimeoutMs: number): Promise<void> {
    this.closing = true;
    await Promise.all(
      this.children.map(async (handle) => {
        if (handle.child.exitCode !== null || handle.child.signalCode !== null) return;
        const exited = once(handle.child, 'exit');
        try {
          await handle.call('close', [mode, drainTimeoutMs]);
        } catch {
          // The child may exit before it can answer; its exit is what we wait for.
        }
        if (handle.child.connected) handle.child.disconnect();
        await exited;
      }),
    );
  }
}

/**
 * Puts a process and its threads under SCHED_IDLE with util-linux `chrt` (Node has no sched_setscheduler). Threads
 * the process starts later inherit the policy. Right after fork the child is still loading, so nothing it serves
 * runs at the normal policy.
 */
function setIdleScheduling(pid: number): void {
  if (process.platform !== 'linux') {
    throw new FakeVllmConfigError('`idleScheduling` needs Linux (SCHED_IDLE)', { field: 'idleScheduling' });
  }
  try {
    execFileSync('chrt', ['--all-tasks', '--idle', '--pid', '0', String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
    throw new FakeVllmConfigError(
      missing
        ? '`idleScheduling` needs the `chrt` program (apt-get install util-linux)'
        : `Cannot set SCHED_IDLE on the engine process ${pid} with chrt: ${String((error as { stderr?: unknown }).stderr ?? (error as Error).message).trim()}`,
      { cause: error, field: 'idleScheduling' },
    );
  }
}
