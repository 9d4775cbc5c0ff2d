import { monitorEventLoopDelay } from 'node:perf_hooks';
import { InFlightGauge } from './engine.js';
import { EngineServer, type EngineStats } from './engine-server.js';
import { FAULT_NAMES, type FaultName, type FaultProfile } from './faults.js';
import {
  type CapacityOptions,
  type EnginePlacement,
  type LatencyOptions,
  type ResolvedEngineOptions,
  type RestartOptions,
  resolveRestartOptions,
  validateCapacityOptions,
  validateLatencyOptions,
} from './options.js';
import { loadRoutes } from './routes/load-routes.js';

/** Ground truth of a whole fake-vllm deployment: per engine, and totals. */
export interface FakeVllmStats {
  engines: EngineStats[];
  total: {
    connectionsOpen: number;
    running: number;
    waiting: number;
    requests: number;
    completed: number;
    aborted: number;
    cancelled: number;
    generationTokens: number;
    faults: Record<FaultName, number>;
    /**
     * Highest running + waiting requests seen at once across all engines. Exact within one process; with several
     * processes it is the sum of each process's exact maximum (an upper bound), and `maxConcurrentExact` is false.
     */
    maxConcurrent: number;
    maxConcurrentExact: boolean;
    /** Engines whose process died (each listed in `engines` with `down: true`). */
    enginesDown: number;
    /**
     * Worst event-loop lag p99 (ms) of the processes serving the engines since the last `resetHighWaterMarks()`.
     * When fake-vllm shares cores with a load generator, a high value says the stand-in server, not the client,
     * was late writing tokens.
     */
    eventLoopLagP99Ms: number;
  };
}

/** What one process's engines report: their stats and the process-wide high-water mark. */
export interface ProcessStats {
  engines: EngineStats[];
  maxConcurrent: number;
  eventLoopLagP99Ms: number;
}

/** Engines reachable through one interface, whether in this process or in children. */
export interface EngineGroup {
  readonly urls: string[];
  stats(): Promise<ProcessStats[]>;
  setFaultProfile(profile: FaultProfile | string, engine?: number): Promise<void>;
  setLatency(latency: LatencyOptions, engine?: number): Promise<void>;
  setCapacity(capacity: CapacityOptions, engine?: number): Promise<void>;
  restartEngine(restart: RestartOptions, engine?: number): Promise<void>;
  resetHighWaterMarks(): Promise<void>;
  close(mode: 'drain' | 'abort', drainTimeoutMs: number): Promise<void>;
}

/** Sums per-process stats into {@link FakeVllmStats}. */
export function aggregateStats(processes: readonly ProcessStats[]): FakeVllmStats {
  const engines = processes.flatMap((process) => process.engines);
  const faults = Object.fromEntries(FAULT_NAMES.map((name) => [name, 0])) as Record<FaultName, number>;
  const total = {
    connectionsOpen: 0,
    running: 0,
    waiting: 0,
    requests: 0,
    completed: 0,
    aborted: 0,
    cancelled: 0,
    generationTokens: 0,
    faults,
    maxConcurrent: processes.reduce((sum, process) => sum + process.maxConcurrent, 0),
    maxConcurrentExact: processes.length <= 1,
    enginesDown: 0,
    eventLoopLagP99Ms: Math.max(0, ...processes.map((process) => process.eventLoopLagP99Ms)),
  };
  for (const engine of engines) {
    total.connectionsOpen += engine.connectionsOpen;
    total.running += engine.running;
    total.waiting += engine.waiting;
    total.requests += engine.requests;
    total.completed += engine.completed;
    total.aborted += engine.aborted;
    total.cancelled += engine.cancelled;
    total.generationTokens += engine.generationTokens;
    for (const name of FAULT_NAMES) faults[name] += engine.faults[name];
    if (engine.down) total.enginesDown++;
  }
  return { engines, total };
}

const LOOP_RESOLUTION_MS = 5;

/** Engines served by this process. */
export class LocalEngineGroup implements EngineGroup {
  readonly urls: string[] = [];
  private readonly gauge = new InFlightGauge();
  private readonly loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });

  private constructor(readonly servers: EngineServer[]) {}

  /**
   * Starts engines concurrently; each binds its own port (0 = kernel-chosen). `engines` are their indices in the
   * whole fleet (a child process serves some of them): engine i gets `perEngine[i]` and seed `seed + i`.
   */
  static async start(
    options: ResolvedEngineOptions,
    host: string,
    ports: number[],
    shared?: import('node:net').Server,
    { perEngine = [], engines = ports.map((_port, index) => index) }: EnginePlacement = {},
  ): Promise<LocalEngineGroup> {
    const group = new LocalEngineGroup([]);
    // Module paths are imported here, in the process that serves the engines (a child imports its own copy).
    const routes = await loadRoutes(options.routes);
    const servers = ports.map((_port, index) => {
      const engine = engines[index] ?? index;
      return new EngineServer(
        { ...options, ...perEngine[engine], seed: options.seed + engine },
        host,
        group.gauge,
        routes,
      );
    });
    group.servers.push(...servers);
    group.loopDelay.enable();
    try {
      group.urls.push(...(await Promise.all(servers.map((server, index) => server.listen(ports[index]!, shared)))));
    } catch (error) {
      await Promise.all(servers.map((server) => server.close('abort', 0)));
      throw error;
    }
    return group;
  }

  private select(engine: number | undefined): EngineServer[] {
    if (engine === undefined) return this.servers;
    const server = this.servers[engine];
    if (!server) throw new RangeError(`Expected \`engine\` within 0..${this.servers.length - 1}, got ${engine}`);
    return [server];
  }

  async stats(): Promise<ProcessStats[]> {
    // The histogram counts whole sampling intervals (an idle loop reads as the resolution): subtract it.
    const lagMs = this.loopDelay.count > 0 ? this.loopDelay.percentile(99) / 1e6 - LOOP_RESOLUTION_MS : 0;
    return [
      {
        engines: this.servers.map((server) => server.stats()),
        maxConcurrent: this.gauge.max,
        eventLoopLagP99Ms: Math.max(0, lagMs),
      },
    ];
  }

  async setFaultProfile(profile: FaultProfile | string, engine?: number): Promise<void> {
    for (const server of this.select(engine)) server.setFaultProfile(profile);
  }

  async setLatency(latency: LatencyOptions, engine?: number): Promise<void> {
    validateLatencyOptions(latency);
    for (const server of this.select(engine)) server.setLatency(latency);
  }

  async setCapacity(capacity: CapacityOptions, engine?: number): Promise<void> {
    validateCapacityOptions(capacity);
    for (const server of this.select(engine)) server.setCapacity(capacity);
  }

  async restartEngine(restart: RestartOptions, engine?: number): Promise<void> {
    const downMs = resolveRestartOptions(restart);
    for (const server of this.select(engine)) server.restart(downMs);
  }

  async resetHighWaterMarks(): Promise<void> {
    for (const server of this.servers) server.resetHighWaterMarks();
    this.gauge.max = this.gauge.current;
    this.loopDelay.reset();
  }

  async close(mode: 'drain' | 'abort', drainTimeoutMs: number): Promise<void> {
    this.loopDelay.disable();
    await Promise.all(this.servers.map((server) => server.close(mode, drainTimeoutMs)));
  }
}
