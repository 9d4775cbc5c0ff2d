import { readdirSync } from 'node:fs';
import { expectedCompletion, generatedTokenText, tokenize } from 'fake-vllm';

/** Open file descriptors of this process. */
export function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Text fake-vllm generates for a text prompt. */
export function expectedText(prompt: string, seed: number, maxTokens: number): string {
  return expectedCompletion(tokenize(prompt), { seed, maxTokens })
    .tokenIds.map((id) => generatedTokenText(id))
    .join('');
}

/** Token ids fake-vllm generates for token ids in. */
export function expectedTokens(prompt: number[], seed: number, maxTokens: number): number[] {
  return expectedCompletion(prompt, { seed, maxTokens }).tokenIds;
}

/** Waits until `check` is true (polling), failing after `timeoutMs`. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
