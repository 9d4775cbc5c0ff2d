/** Node's timers overflow above this many ms (they then fire after 1 ms): longer waits are re-armed in steps. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
