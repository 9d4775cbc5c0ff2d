/** One step's figures the knee finder needs. */
export interface KneeInput {
  concurrency: number;
  valid: boolean;
  errorRate: number;
  percentiles: Record<string, number | null>;
}

/** Whether a step meets every SLO threshold (`ttft_p99_ms` reads `percentiles['ttft_p99']`). */
export function meetsSlo(step: KneeInput, slo: Record<string, number>, maxErrorRate: number): boolean {
  if (!step.valid || step.errorRate > maxErrorRate) return false;
  for (const [key, limit] of Object.entries(slo)) {
    const value = step.percentiles[key.replace(/_ms$/, '')];
    if (value === null || value === undefined || value > limit) return false;
  }
  return true;
}

/** The knee: the highest concurrency whose step meets the SLO, or null when none does. */
export function findKnee(
  steps: readonly KneeInput[],
  slo: Record<string, number>,
  maxErrorRate: number,
): number | null {
  let knee: number | null = null;
  for (const step of steps)
    if (meetsSlo(step, slo, maxErrorRate) && (knee === null || step.concurrency > knee)) knee = step.concurrency;
  return knee;
}
