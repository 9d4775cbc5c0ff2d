// Entry of a sweep worker process: one SDK client (or plain undici Agent) and its own event loop.
import './worker.js';
