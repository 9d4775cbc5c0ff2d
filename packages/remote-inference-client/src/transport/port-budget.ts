import { readFileSync } from 'node:fs';

/** The kernel's ephemeral port range, or undefined where it cannot be read (non-Linux). */
export function ephemeralPortRange(
  path = '/proc/sys/net/ipv4/ip_local_port_range',
): { low: number; high: number; size: number } | undefined {
  try {
    const [low, high] = readFileSync(path, 'utf8').trim().split(/\s+/).map(Number);
    if (!Number.isInteger(low) || !Number.isInteger(high) || high! < low!) return undefined;
    return { low: low!, high: high!, size: high! - low! + 1 };
  } catch {
    return undefined;
  }
}

/**
 * How many concurrent connections this host can open to `engines` distinct endpoints.
 *
 * Without source IPs, `connect()` picks the port knowing the destination, so each destination has its own
 * ephemeral range: budget = ports x engines. With source IPs the socket is bound to (ip, 0) before connecting and
 * the kernel picks the port at bind time, not knowing the destination: one IP's range is shared by all
 * destinations, budget = ports x source IPs. (Measured in a network namespace with a 100-port range; see
 * test/port-exhaustion.test.ts. Linux's IP_BIND_ADDRESS_NO_PORT would restore per-destination ports, but Node
 * does not expose it.)
 */
export function connectionBudget(ports: number, sourceIps: number, engines: number): number {
  return sourceIps > 0 ? ports * sourceIps : ports * engines;
}
