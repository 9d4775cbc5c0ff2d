import { describe, expect, it } from 'vitest';
import { checkOpenFileLimit, FILES_PER_ENGINE, openFileLimit, RESERVED_FILES } from './open-file-limit.js';

describe('checkOpenFileLimit', () => {
  const limit = 1000;
  const most = (limit - 100 - RESERVED_FILES) / FILES_PER_ENGINE; // 418 with 100 files already open

  it('allows as many engines in one process as leave a socket and a connection each', () => {
    expect(() =>
      checkOpenFileLimit({ engines: most, processes: 0, sharePort: false }, { limit, inUse: 100 }),
    ).not.toThrow();
    expect(() =>
      checkOpenFileLimit({ engines: most + 1, processes: 0, sharePort: false }, { limit, inUse: 100 }),
    ).toThrow(/`engines` to fit the open-file limit of 1000 .* at most 418, got 419;/);
  });

  it('counts per child process, and one engine per child with a shared port', () => {
    const fresh = (limit - RESERVED_FILES) / FILES_PER_ENGINE; // 468: children start with Node's own files only
    expect(() =>
      checkOpenFileLimit({ engines: 2 * fresh, processes: 2, sharePort: false }, { limit, inUse: 0 }),
    ).not.toThrow();
    expect(() =>
      checkOpenFileLimit({ engines: 2 * fresh + 1, processes: 2, sharePort: false }, { limit, inUse: 0 }),
    ).toThrow(/got 937 \(469 in each of 2 processes\)/);
    expect(() =>
      checkOpenFileLimit({ engines: 100_000, processes: 4, sharePort: true }, { limit, inUse: 0 }),
    ).not.toThrow();
  });

  it('has nothing to check without a limit to read', () => {
    expect(() =>
      checkOpenFileLimit({ engines: 1e6, processes: 0, sharePort: false }, { limit: undefined, inUse: 0 }),
    ).not.toThrow();
  });

  it.runIf(process.platform === 'linux')('reads the limit of this process', () => {
    expect(openFileLimit()).toBeGreaterThan(0);
  });
});
