import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { EngineGroup, ProcessStats } from './engine-group.js';
import type { FaultProfile } from './faults.js';
import type { LatencyOptions, ResolvedEngineOptions } from './options.js';

/** Messages a child sends its parent. */
export type ChildMessage =
  | { type: 'ready'; urls: string[] }
  | { type: 'start-error'; message: string }
  | { type: 'result'; id: number; value?: unknown; error?: string };

/** Messages a parent sends a child. */
export type ParentMessage =
  | { type: 'start'; options: ResolvedEngineOptions; host: string; ports: number[] }
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

  constructor(readonly child: ChildProcess) {
    child.on('message', (message: ChildMessage) => {
      if (message.type !== 'result') return;
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.error !== undefined) waiter.reject(new Error(message.error));
      else waiter.resolve(message.value);
    });
    child.on('exit', (code, signal) => {
      for (const waiter of this.pending.values()) {
        waiter.reject(new Error(`fake-vllm child ${child.pid} exited (code ${code}, signal ${signal})`));
      }
      this.pending.clear();
    });
  }

  call(method: keyof EngineGroup, args: unknown[]): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ type: 'call', id, method, args } satisfies ParentMessage);
    });
  }
}

/**
 * Engines spread over child processes (each process can hold ~20,000 descriptors here, so 10,000+ connections
 * need more than one). The parent only relays control calls and gathers stats.
 */
export class ChildEngineGroup implements EngineGroup {
  readonly urls: string[] = [];
  /** Engine index -> [child, index inside that child]. */
  private readonly placement: Array<[ChildHandle, number]> = [];

  private constructor(private readonly children: ChildHandle[]) {}

  /** Forks `processes` children and starts engine i in child i % processes. */
  static async start(
    options: ResolvedEngineOptions,
    host: string,
    ports: number[],
    processes: number,
    { sharePort = false, nice = 0 }: { sharePort?: boolean; nice?: number } = {},
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
    const group = new ChildEngineGroup(handles);
    try {
      for (const handle of handles) {
        if (nice === 0 || handle.child.pid === undefined) continue;
        try {
          setPriority(handle.child.pid, nice);
        } catch (error) {
          throw new Error(
            `Cannot set \`nice\` to ${nice} (${(error as Error).message}): priorities below 0 need root or CAP_SYS_NICE`,
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
            } satisfies ParentMessage,
            shared,
          );
          const [message] = (await Promise.race([
            once(handle.child, 'message'),
            once(handle.child, 'exit').then(() => [{ type: 'start-error', message: 'child exited during start' }]),
          ])) as [ChildMessage];
          if (message.type === 'start-error') throw new Error(`fake-vllm child failed to start: ${message.message}`);
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
    });
    return group;
  }

  async stats(): Promise<ProcessStats[]> {
    const all = await Promise.all(this.children.map((child) => child.call('stats', []) as Promise<ProcessStats[]>));
    return all.flat();
  }

  private async forEngines(method: keyof EngineGroup, engine: number | undefined, args: unknown[]): Promise<void> {
    if (engine === undefined) {
      await Promise.all(this.children.map((child) => child.call(method, [...args, undefined])));
      return;
    }
    const place = this.placement[engine];
    if (!place) throw new RangeError(`Expected \`engine\` within 0..${this.placement.length - 1}, got ${engine}`);
    await place[0].call(method, [...args, place[1]]);
  }

  setFaultProfile(profile: FaultProfile | string, engine?: number): Promise<void> {
    return this.forEngines('setFaultProfile', engine, [profile]);
  }

  setLatency(latency: LatencyOptions, engine?: number): Promise<void> {
    return this.forEngines('setLatency', engine, [latency]);
  }

  async resetHighWaterMarks(): Promise<void> {
    await Promise.all(this.children.map((child) => child.call('resetHighWaterMarks', [])));
  }

  async close(mode: 'drain' | 'abort', drainTimeoutMs: number): Promise<void> {
    await Promise.all(
      this.children.map(async (handle) => {
        if (handle.child.exitCode !== null || handle.child.signalCode !== null) return;
        const exited = once(handle.child, 'exit');
        try {
          await handle.call('close', [mode, drainTimeoutMs]);
        } catch {
          // The child may exit before it can answer; its exit is what we wait for.
        }
        handle.child.disconnect();
        await exited;
      }),
    );
  }
}
