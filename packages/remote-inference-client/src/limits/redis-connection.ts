import { Redis as IORedis, type RedisOptions } from 'ioredis';
import type { RedisLimitsOptions } from './qps-limiter.js';

/**
 * The connection options of the cluster limits' Redis clients, in one place. The URL is parsed by ioredis itself
 * (a client constructed with `lazyConnect`, never connected): `redis://` and `rediss://` (TLS), `username` and
 * `password`, and the database number as the path (`redis://host:6379/3`). Two hand-written parsers used to
 * disagree (one dropped the database; neither knew TLS or usernames).
 */
export function redisOptions(options: RedisLimitsOptions): RedisOptions {
  const parser = new IORedis(options.url, { lazyConnect: true });
  const { host, port, username, password, db, tls, family } = parser.options;
  parser.disconnect();
  const parsed: RedisOptions = {};
  for (const [key, value] of Object.entries({ host, port, username, password, db, tls, family })) {
    if (value !== undefined && value !== '') (parsed as Record<string, unknown>)[key] = value;
  }
  return { ...parsed, maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: options.timeoutMs ?? 1000 };
}
