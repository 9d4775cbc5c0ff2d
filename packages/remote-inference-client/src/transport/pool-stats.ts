/** The connections of one engine's pool (public as `EngineConnectionStats` in `stats().engines[i].connections`). */
export interface PoolStats {
  open: number;
  idle: number;
  busy: number;
  connecting: number;
  /**
   * Connections whose socket closed while idle (the keep-alive timer or the server), kept without a socket so the
   * next new connection reuses them instead of building another undici `Client`. Not counted in `open`.
   */
  spare: number;
  /** Requests waiting for a connection (the ceiling or connect pacing). */
  waiting: number;
  opened: number;
  reused: number;
  /** Idle connections dropped at pick time because the server may already have closed them. */
  staleDiscarded: number;
  connectErrors: number;
}
