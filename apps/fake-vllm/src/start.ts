import { ChildEngineGroup } from './child-engine-group.js';
import { ControlChannelServer, type FakeVllmControl } from './control-channel.js';
import { aggregateStats, type EngineGroup, type FakeVllmStats, LocalEngineGroup } from './engine-group.js';
import { FakeVllmConfigError } from './errors.js';
import { checkOpenFileLimit } from './open-file-limit.js';
import { type FakeVllmOptions, type ResolvedFakeVllmOptions, resolveFakeVllmOptions } from './options.js';
import { routesAreSerializable } from './routes/load-routes.js';

/** A running fake-vllm deployment. */
export interface FakeVllm {
  /** URL of the first engine. */
  readonly url: string;
  /** Every engine, each with its own port and scheduler. */
  readonly engines: ReadonlyArray<{ readonly url: string }>;
  /** Control and telemetry, in-process; `control.url` is the WebSocket channel for other processes. */
  readonly control: FakeVllmControl;
  /** The options in force, defaults applied. */
  readonly options: ResolvedFakeVllmOptions;
  /**
   * Stops accepting, then ends in-flight requests: `drain` lets them finish (up to `drainTimeoutMs`), `abort`
   * ends them with `finish_reason: "abort"`. Closes every socket and child process.
   */
  close(options?: { mode?: 'drain' | 'abort'; drainTimeoutMs?: number }): Promise<void>;
}

/**
 * Starts fake vLLM engines (in this process, or spread over `processes` children) and the control channel.
 * Engines bind port 0 by default and report the port the kernel gave them, so parallel starts never race.
 */
export async function startFakeVllm(options: FakeVllmOptions = {}): Promise<FakeVllm> {
  const resolved = resolveFakeVllmOptions(options);
  if (resolved.processes > 0 && !routesAreSerializable(resolved.routes)) {
    throw new FakeVllmConfigError(
      'Expected `routes` to be module paths or static routes when `processes` > 0: a handler function cannot be sent to a child process (export it from a module and give its path)',
      { field: 'routes' },
    );
  }
  checkOpenFileLimit(resolved);
  const ports = Array.from({ length: resolved.engines }, (_, index) =>
    resolved.port === 0 ? 0 : resolved.port + index,
  );
  const group: EngineGroup =
    resolved.processes > 0
      ? await ChildEngineGroup.start(resolved, resolved.host, ports, resolved.processes, {
          sharePort: resolved.sharePort,
          nice: resolved.nice,
          idleScheduling: resolved.idleScheduling,
          perEngine: resolved.perEngine,
        })
      : await LocalEngineGroup.start(resolved, resolved.host, ports, undefined, { perEngine: resolved.perEngine });
  const order = new Map(group.urls.map((url, index) => [url, index]));
  const stats = async (): Promise<FakeVllmStats> => {
    const aggregated = aggregateStats(await group.stats());
    // With a shared port every engine has the same URL: keep process order.
    if (!resolved.sharePort) aggregated.engines.sort((a, b) => (order.get(a.url) ?? 0) - (order.get(b.url) ?? 0));
    return aggregated;
  };
  const operations = {
    stats,
    setFaultProfile: (profile: Parameters<EngineGroup['setFaultProfile']>[0], engine?: number) =>
      group.setFaultProfile(profile, engine),
    setLatency: (latency: Parameters<EngineGroup['setLatency']>[0], engine?: number) =>
      group.setLatency(latency, engine),
    setCapacity: (capacity: Parameters<EngineGroup['setCapacity']>[0], engine?: number) =>
      group.setCapacity(capacity, engine),
    restartEngine: (restart: Parameters<EngineGroup['restartEngine']>[0] = {}, engine?: number) =>
      group.restartEngine(restart, engine),
    resetHighWaterMarks: () => group.resetHighWaterMarks(),
  };
  let channel: ControlChannelServer | undefined;
  if (resolved.control.enabled) {
    channel = new ControlChannelServer(operations, resolved.control);
    try {
      await channel.start();
    } catch (error) {
      await group.close('abort', 0);
      throw error;
    }
  }
  let closing: Promise<void> | undefined;
  return {
    url: group.urls[0]!,
    engines: (resolved.sharePort ? group.urls.slice(0, 1) : group.urls).map((url) => ({ url })),
    control: { url: channel?.url, ...operations },
    options: resolved,
    close({ mode = 'abort', drainTimeoutMs = 30_000 } = {}) {
      closing ??= (async () => {
        await channel?.close();
        await group.close(mode, drainTimeoutMs);
      })();
      return closing;
    },
  };
}
