import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LIMITS, parseSweepArgs, SweepConfigError } from '../src/options.js';

const dir = mkdtempSync(join(tmpdir(), 'sweep-options-'));
function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe('every size has a limit and every bad value is a typed error naming its flag', () => {
  it.each([
    [['--steps', '1000000000'], /`--steps` to be at most 50 whole numbers in 1\.\.200000/],
    [['--steps', Array.from({ length: LIMITS.steps + 1 }, (_, index) => index + 1).join(',')], /--steps/],
    [['--fake-engines', '5000'], /`--fake-engines` to be a whole number in 1\.\.1000/],
    [['--fake-processes', '1000'], /--fake-processes/],
    [['--fake-max-num-seqs', '1e9'], /--fake-max-num-seqs/],
    [['--workers', '0.5'], /`--workers` to be a whole number in 0\.\.256, got `0\.5`/],
    [['--workers', '100000'], /--workers/],
    [['--output-tokens', '0'], /`--output-tokens` to be N, uniform:MIN:MAX or normal:MEAN:STDDEV/],
    [['--output-tokens', '10000000'], /--output-tokens/],
    [['--prompt-tokens', 'uniform:10:1'], /`--prompt-tokens` .*MIN is above MAX/],
    [['--prompt-tokens', 'uniform:10'], /--prompt-tokens/],
    [['--prompt-tokens', '5:6'], /--prompt-tokens/],
    [['--session-turns', '1e6'], /--session-turns/],
    [['--measure-ms', '0'], /--measure-ms/],
    [['--ramp-ms', '1e12'], /`--ramp-ms` to be a number in 0\.\.3600000/],
    [['--request-timeout-ms', '0'], /--request-timeout-ms/],
    [['--request-timeout-ms', 'Infinity'], /--request-timeout-ms/],
    [['--max-error-rate', '2'], /--max-error-rate/],
    [['--max-concurrency', '1e9'], /--max-concurrency/],
    [['--seed', '1.5'], /--seed/],
    [['--gamma-shape', '0'], /--gamma-shape/],
    [['--source-ips', 'not-an-ip'], /`--source-ips` .*got `not-an-ip`/],
    [['--source-ips', 'auto:1000'], /--source-ips auto:N/],
    [['--target', 'ftp://x'], /`--target` to be an http\(s\) URL/],
    [['--fake-itl-ms', '0'], /Invalid `--fake-itl-ms` for the embedded fake-vllm: .*itlMs/],
    [['--fake-nice', '20'], /--fake-nice/],
    [['--faults', 'bogus'], /Invalid `--faults`: .*got `bogus`/],
    [['--faults', '{"x":'], /`--faults` to be a built-in profile name, a JSON object or @file\.json/],
    [['--faults', '@/nonexistent/profile.json'], /`--faults`/],
    [['--config', file('list.yaml', '- 1\n- 2\n')], /`--config` file .* mapping of options .*got a list/],
    [['--config', file('typo.json', '{"stepz": "10"}')], /Unknown option `stepz` in the `--config` file/],
    [['--config', join(dir, 'missing.yaml')], /Cannot read the `--config` file/],
    [['--config', file('bad-slo.json', '{"slo": {"ttft_p99_ms": "fast"}}')], /`--slo` entries like/],
  ])('%j', (argv, message) => {
    expect(() => parseSweepArgs(argv)).toThrow(SweepConfigError);
    expect(() => parseSweepArgs(argv)).toThrow(message);
  });

  it('accepts the same values from a config file, and a fault profile from @file (fake-vllm parses it)', () => {
    const profile = file('faults.json', '{"status-503": 0.01}');
    const config = file('ok.yaml', `steps: 10,20\nrequestTimeoutMs: 5000\nfaults: "@${profile}"\n`);
    const { options } = parseSweepArgs(['--config', config]);
    expect(options.steps).toEqual([10, 20]);
    expect(options.requestTimeoutMs).toBe(5000);
    expect(options.faults).toEqual({ 'status-503': 0.01 });
    expect(parseSweepArgs([]).options.requestTimeoutMs).toBe(60_000);
    expect(parseSweepArgs(['--steps', '200000']).options.fake.engines).toBe(400);
  });
});
