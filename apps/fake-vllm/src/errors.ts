/** Thrown when fake-vllm is given an option or fault specification it cannot use. */
export class FakeVllmConfigError extends Error {
  readonly code = 'ERR_FAKE_VLLM_CONFIG';
  /** The option at fault (`itlMs`, `control.port`), when one is: the CLI names its flag from this. */
  readonly field: string | undefined;
  constructor(message: string, options?: { cause?: unknown; field?: string }) {
    super(message, options);
    this.name = 'FakeVllmConfigError';
    this.field = options?.field;
  }
}
