/** A program that real-component tests run, and the Debian package that provides it. */
export interface SystemComponent {
  /** The program's name, as the tests ask for it. */
  name: string;
  /** The Debian package to `apt-get install` for it. */
  aptPackage: string;
  /** The tests that need it. */
  usedBy: string;
  /** Whether it is installed and runs. */
  present(): boolean;
}

/** Every system component a test here may need. */
export declare const systemComponents: readonly SystemComponent[];

/** Debian's own Python (`/usr/bin/python3`), the one `apt-get install python3-*` serves. */
export declare const DEBIAN_PYTHON: string;

/** The components that are not installed. */
export declare function missingComponents(): SystemComponent[];

/** Debian's chromium executable, or undefined where it is not installed. */
export declare function chromiumPath(): string | undefined;

/**
 * Undefined when every named component is installed; otherwise the reason to skip `test`, which is also printed
 * loudly and appended to `$RIG_SKIP_LOG` so that the root `npm test` names it again at the end of the run.
 */
export declare function skipReason(test: string, names: readonly string[]): string | undefined;

/** Prints a skip reason loudly and records it for the end-of-run summary; returns it. */
export declare function reportSkip(reason: string): string;

/**
 * Rebuilds (`tsc -p tsconfig.build.json`) each package directory whose `src/` is newer than its `dist/`, so that a
 * test that starts `dist/` in a child process never exercises stale code, even when run with `vitest` alone.
 * `RIG_NO_REBUILD=1` skips it (a mutation test that breaks compilation on purpose, with dist known to be fresh).
 */
export declare function ensureBuilt(packageDirs: readonly string[]): void;
