// The system programs that the real-component tests run, how to tell they are there, and the Debian package that
// provides each. No dependencies: scripts/bootstrap.mjs imports this before the workspace is installed.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** Debian's own Python, which `apt-get install python3-*` serves (a `python3` earlier on PATH may be another). */
export const DEBIAN_PYTHON = '/usr/bin/python3';

function runs(command, args) {
  const result = spawnSync(command, args, { stdio: 'ignore', timeout: 10_000 });
  return result.status === 0;
}

/** @type {import('./index.d.mts').SystemComponent[]} */
export const systemComponents = [
  {
    name: 'redis-server',
    aptPackage: 'redis-server',
    usedBy: 'remote-inference-client test/cluster-limits.test.ts',
    present: () => runs('redis-server', ['--version']),
  },
  {
    name: 'openssl',
    aptPackage: 'openssl',
    usedBy: 'remote-inference-client test/cluster-limits.test.ts (a throwaway CA for the rediss:// test)',
    present: () => runs('openssl', ['version']),
  },
  {
    name: 'ip',
    aptPackage: 'iproute2',
    usedBy: 'remote-inference-client test/port-exhaustion.test.ts',
    present: () => runs('ip', ['-V']) && runs('ss', ['-V']),
  },
  {
    name: 'uvicorn',
    aptPackage: 'python3-uvicorn',
    usedBy:
      'remote-inference-client test/uvicorn-stream.test.ts and test/uvicorn-keep-alive.test.ts (real uvicorn, as vLLM serves)',
    present: () => runs(DEBIAN_PYTHON, ['-c', 'import uvicorn']),
  },
  {
    name: 'aiohttp',
    aptPackage: 'python3-aiohttp',
    usedBy: 'fake-vllm test/python.test.ts (python/test_skyrl_routes.py: the HTTP client SkyRL uses)',
    present: () => runs(DEBIAN_PYTHON, ['-c', 'import aiohttp']),
  },
  {
    name: 'pytest',
    aptPackage: 'python3-pytest',
    usedBy: 'fake-vllm test/python.test.ts (runs apps/fake-vllm/python with pytest)',
    present: () => runs(DEBIAN_PYTHON, ['-c', 'import pytest']),
  },
  {
    name: 'chromium',
    aptPackage: 'chromium',
    usedBy: 'load-sweep test/report-browser.test.ts',
    present: () => chromiumPath() !== undefined,
  },
];

/** Debian's chromium, where it is installed. */
export function chromiumPath() {
  return ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((path) => existsSync(path));
}

/** The components of `systemComponents` that are not installed. */
export function missingComponents() {
  return systemComponents.filter((component) => !component.present());
}
