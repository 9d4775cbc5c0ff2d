import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { DEBIAN_PYTHON, skipReason } from '@rig/test-support';
import { expect, it } from 'vitest';

// The Python suite in ../python (pytest + aiohttp, Debian's python3): the fixture a Python user starts fake-vllm
// with, and every route SkyRL's RemoteInferenceClient uses, with the bodies it sends, against `--preset skyrl`.
// globalSetup has rebuilt dist/, which the fixture starts.
const skipped = skipReason('fake-vllm python.test.ts', ['aiohttp', 'pytest']);
const packageDir = fileURLToPath(new URL('..', import.meta.url));

it.skipIf(skipped !== undefined)(
  'the Python suite (python/*.py) passes under pytest',
  async () => {
    const pytest = spawn(DEBIAN_PYTHON, ['-m', 'pytest', 'python', '-q', '-p', 'no:cacheprovider', '-rfE'], {
      cwd: packageDir,
      // No __pycache__ or .pytest_cache in the work tree.
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', FAKE_VLLM_CLI: `${packageDir}dist/cli.js` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    pytest.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    pytest.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const [code] = (await once(pytest, 'exit')) as [number | null];
    expect(code, `pytest failed:\n${output}`).toBe(0);
    // A run that collected nothing also exits non-zero (5), but say it plainly: the suite must have run.
    expect(output).toMatch(/\d+ passed/);
    expect(output).not.toMatch(/skipped|deselected/);
  },
  240_000,
);
