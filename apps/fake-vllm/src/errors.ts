/** Thrown when fake-vllm is given an option or fault specification it cannot use. */
export class FakeVllmConfigError extends Error {
  readonly code = 'ERR_FAKE_VLLM_CONFIG';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FakeVllmConfigError';
  }
}
