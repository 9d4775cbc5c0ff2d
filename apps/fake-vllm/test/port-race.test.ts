import { readdirSync, readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { expect, it } from 'vitest';
import { startFakeVllm } from '../src/index.js';

it('starts 50 engines concurrently, 20 times, with no port race', async () => {
  for (let round = 0; round < 20; round++) {
    const servers = await Promise.all(Array.from({ length: 50 }, () => startFakeVllm({ control: false })));
    const ports = new Set(servers.map((server) => new URL(server.url).port));
    expect(ports.size).toBe(50);
    const health = await Promise.all(
      servers.map((server) => fetch(`${server.url}/health`).then((response) => response.status)),
    );
    expect(health.every((status) => status === 200)).toBe(true);
    await Promise.all(servers.map((server) => server.close()));
  }
});

/** Pids of this process's direct children, from /proc. */
function childPids(): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        // Field 4 of /proc/<pid>/stat is the parent pid (the command in field 2 may contain spaces: split after ')').
        return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]) === process.pid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

it('runs its child processes at the requested nice and rejects an out-of-range one', async () => {
  const before = new Set(childPids());
  const server = await startFakeVllm({ engines: 2, processes: 2, nice: 7, control: false });
  try {
    const children = childPids().filter((pid) => !before.has(pid));
    expect(children).toHaveLength(2);
    for (const pid of children) expect(getPriority(pid)).toBe(7);
    expect((await fetch(`${server.engines[1]!.url}/health`)).status).toBe(200);
  } finally {
    await server.close();
  }
  await expect(startFakeVllm({ processes: 1, nice: 25, control: false })).rejects.toThrow(/`nice`.*-20\.\.19/);
});
