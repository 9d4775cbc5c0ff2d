import { percentilesMeetSlo, type Slo } from './slo.js';

/** One step's figures the knee finder needs. */
export interface KneeInput {
  concurrency: number;
  valid: boolean;
  errorRate: number;
  percentiles: Record<string, number | null>;
}

/** Whether a step is valid, within `maxErrorRate`, and meets every SLO threshold ({@link percentilesMeetSlo}). */
export function meetsSlo(step: KneeInput, slo: Slo, maxErrorRate: number): boolean {
  if (!step.valid || step.errorRate > maxErrorRate) return false;
  return percentilesMeetSlo(step.percentiles, slo);
}

/** The knee: the highest concurrency whose step meets the SLO, or null when none does. */
export function findKnee(steps: readonly KneeInput[], slo: Slo, maxErrorRate: number): number | null {
  let knee: number | null = null;
  for (const step of steps)
    if (meetsSlo(step, slo, maxErrorRate) && (knee === null || step.concurrency > knee)) knee = step.concurrency;
  return knee;
}
