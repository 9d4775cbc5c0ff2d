import type { Server } from 'node:net';
import type { ChildMessage, ParentMessage } from './child-engine-group.js';
import { LocalEngineGroup } from './engine-group.js';

// Entry of a fake-vllm child process: hosts some engines, answers its parent's calls over IPC.
let group: LocalEngineGroup | undefined;
const send = (message: ChildMessage) => process.send?.(message);

process.on('message', async (message: ParentMessage, handle?: Server) => {
  if (message.type === 'start') {
    try {
      group = await LocalEngineGroup.start(message.options, message.host, message.ports, handle, message.placement);
      send({ type: 'ready', urls: group.urls });
    } catch (error) {
      send({ type: 'start-error', message: (error as Error).message, code: (error as { code?: string }).code });
      process.exit(1);
    }
    return;
  }
  if (message.type === 'call') {
    try {
      if (!group) throw new Error('engines not started');
      const method = group[message.method] as (...args: unknown[]) => Promise<unknown>;
      const value = await method.apply(group, message.args);
      send({ type: 'result', id: message.id, value });
    } catch (error) {
      send({ type: 'result', id: message.id, error: (error as Error).message });
    }
  }
});

// The parent is gone (or told us to stop): close what is left and exit.
process.on('disconnect', () => {
  void (group?.close('abort', 0) ?? Promise.resolve()).finally(() => process.exit(0));
});
process.on('SIGTERM', () => {
  // The parent coordinates shutdown; a SIGTERM to the whole process group must not kill in-flight drains.
});
