import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { reportSkip, skipReason } from '@rig/test-support';
import { expect, it } from 'vitest';

// Proof in a real kernel: a network namespace with a 100-port ephemeral range (needs root and `unshare`).
function namespacesAvailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root';
  try {
    execFileSync('unshare', ['-n', '--', 'true'], { stdio: 'ignore' });
    execFileSync('ss', ['-V'], { stdio: 'ignore' });
    return undefined;
  } catch (error) {
    return `cannot create a network namespace or run ss (${(error as Error).message.split('\n')[0]})`;
  }
}

const missing = skipReason('remote-inference-client port-exhaustion.test.ts', ['ip']);
const namespaces = missing === undefined ? namespacesAvailable() : undefined;
const unavailable =
  missing ?? (namespaces && reportSkip(`remote-inference-client port-exhaustion.test.ts: SKIPPED, ${namespaces}`));

it.skipIf(unavailable !== undefined)(
  'ports run out at 100 per source IP, fail at once with a typed error, and 4 source IPs hold 400',
  () => {
    const scenario = fileURLToPath(new URL('./fixtures/netns-scenario.mjs', import.meta.url));
    const output = execFileSync('unshare', ['-n', '--', process.execPath, scenario], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    const result = JSON.parse(output.trim().split('\n').at(-1)!);
    console.log(`port-exhaustion: ${JSON.stringify(result)}`);
    // One source IP: exactly the 100 ports, then ERR_PORTS_EXHAUSTED at once (no waiting, no retries).
    // ~100: the kernel may keep a port or two of a 100-port range out of reach (98 seen here).
    expect(result.oneIp.held).toBeGreaterThanOrEqual(95);
    expect(result.oneIp.held).toBeLessThanOrEqual(100);
    expect(result.oneIp.failures).toEqual({ ERR_PORTS_EXHAUSTED: 150 - result.oneIp.held });
    expect(result.oneIp.slowestFailureMs).toBeLessThan(400);
    // The kernel's own EADDRNOTAVAIL maps to the same typed error.
    expect(result.kernelExhausted.failures).toEqual({ ERR_PORTS_EXHAUSTED: 10 });
    // Four source IPs: four port spaces, zero errors, the same client port seen on several IPs.
    expect(result.fourIps.held).toBe(400);
    expect(result.fourIps.failures).toEqual({});
    expect(result.fourIps.establishedToEngine).toBe(400);
    expect(result.fourIps.sourceIpsSeen).toBe(4);
    expect(result.fourIps.portsSharedByIps).toBeGreaterThan(50);
    // The rule for bound sockets (bind(ip, 0) before connect): the port is chosen at bind time, so one IP's 100 ports
    // are shared by every destination — what connectionBudget() assumes. Unbound sockets get 100 per destination.
    expect(result.boundOneIpTwoEngines.total).toBeGreaterThanOrEqual(95);
    expect(result.boundOneIpTwoEngines.total).toBeLessThanOrEqual(100);
    expect(result.unboundOtherEngine.held).toBeGreaterThanOrEqual(95);
    // And the two kinds interact: once ports were bound (with SO_REUSEADDR, as libuv does), connect()'s own port
    // search skips them, so unbound connections to a new destination find none.
    expect(result.unboundAfterBinding.failures).toEqual({ ERR_PORTS_EXHAUSTED: 10 });
  },
);
