import type { Scheduler } from '../limits/admission.js';
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
      for (const result of results) {
        const entry = scheduler.list().find((engine) => engine.endpoint === result.engine);
        if (!entry) continue;
        if (result.ok) entry.health.onSuccess();
        else entry.health.onConnectionFailure();
      }
    } finally {
      running = false;
    }
  }, intervalMs);
  timer.unref();
  return timer;
}
