// Entry of a sweep worker process: one load generator (SDK client or plain undici Agent) and its own event loop.
import { runWorker } from './worker-host.js';

runWorker();
