/**
 * Bad input or a machine/engine the sweep cannot run against: the message names what was wrong and how to fix it.
 * The CLI prints it without a stack and exits 2.
 */
export class SweepConfigError extends Error {
  override readonly name = 'SweepConfigError';
}
