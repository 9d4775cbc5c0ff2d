import { ConnectionError } from '../errors.js';
import type { EngineEntry, Scheduler } from '../limits/admission.js';
import { bookkeepingGet, isAttemptFailure, type SendAttempt } from '../transport/attempt.js';
import type { ControlPlane } from './control-plane.js';

/**
 * Polls `GET /health` on every engine every `intervalMs`: a failed check counts like a connection failure, a 200
 * heals. Never two rounds at once; the timer does not keep the process alive.
 */
export function startActiveHealthChecks(
  control: ControlPlane,
  scheduler: Scheduler,
  intervalMs: number,
  closed: () => boolean,
): NodeJS.Timeout {
  let running = false;
  const timer = setInterval(async () => {
    if (running || closed()) return;
    running = true;
    try {
      const results = await control.health(Math.min(5000, intervalMs));
      let healed = false;
      for (const result of results) {
        const entry = scheduler.list().find((engine) => engine.endpoint === result.engine);
        if (!entry) continue;
        if (result.ok) {
          healed ||= !entry.health.available();
          entry.health.onSuccess();
        } else entry.health.onConnectionFailure();
      }
      // Requests queued for an engine this healed take it now (they used to wait for the cooldown's own end).
      if (healed) scheduler.pump();
    } catch {
      // Closed meanwhile (the control plane rejects after close()): nothing to check.
    } finally {
      running = false;
    }
  }, intervalMs);
  timer.unref();
  return timer;
}

/**
 * Probes, with `GET /health`, each engine in cooldown because it refused connections (see
 * `health.probeIntervalMs`): when its next probe is due, one probe at a time per engine. Any HTTP answer below 500
 * re-admits the engine (it listens again: restarted) and wakes the queue; a refusal schedules the next probe after
 * the same interval, a reset, a timeout or a 5xx (vLLM's `/health` says 503 while its engine is dead) a later one. Probes go through the
 * client's one way to send (the `sendAttempt` seam in tests). The timers do not keep the process alive.
 */
export class RecoveryProber {
  private readonly timers = new Map<EngineEntry, NodeJS.Timeout>();
  private closed = false;
  /** Probes sent and answered, for tests. */
  readonly counters = { probes: 0, answered: 0 };

  /** One probe's deadline, connect included (the connect alone is also bounded by `timeouts.connectMs`). */
  private readonly timeoutMs = 2000;

  constructor(
    private readonly scheduler: Scheduler,
    private readonly send: SendAttempt,
    private readonly headers: Record<string, string>,
    private readonly connectTimeoutMs: number,
  ) {}

  /** Call after a failure was recorded on an engine: schedules its probe if it now awaits one. */
  watch(entry: EngineEntry): void {
    if (this.closed || this.timers.has(entry)) return;
    const dueInMs = entry.health.probeDueInMs();
    if (dueInMs === undefined) return;
    const timer = setTimeout(() => void this.probe(entry), dueInMs);
    timer.unref();
    this.timers.set(entry, timer);
  }

  private async probe(entry: EngineEntry): Promise<void> {
    if (entry.draining) {
      this.timers.delete(entry); // removed from the fleet (setEngines): nothing to re-admit
      return;
    }
    this.counters.probes++;
    let answered = false;
    let refused = false;
    try {
      const result = await this.send(
        entry.endpoint,
        bookkeepingGet(entry.endpoint, '/health', this.headers, this.timeoutMs, this.connectTimeoutMs, 64 * 1024),
        undefined,
      );
      answered = result.status < 500;
    } catch (failure) {
      // Still down. Refused (nobody listens yet, a restart in progress) is probed again at the same interval.
      const error = isAttemptFailure(failure) ? failure.error : failure;
      refused = error instanceof ConnectionError && error.systemCode === 'ECONNREFUSED';
    }
    this.timers.delete(entry);
    if (this.closed) return;
    if (answered) this.counters.answered++;
    entry.health.onProbe(answered, refused);
    if (answered) this.scheduler.pump();
    else this.watch(entry);
  }

  close(): void {
    this.closed = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
  }
}
