import { Redis as IORedis, type RedisOptions } from 'ioredis';
import { InvalidOptionsError } from '../errors.js';
import type { RedisLimitsOptions } from './qps-limiter.js';

/**
 * What the limiter sets itself, so that an outage fails fast instead of queueing requests: a caller's
 * `limits.redis.options` may not set them (`timeoutMs` sets the connect timeout).
 */
const OWN_OPTIONS = ['lazyConnect', 'enableOfflineQueue', 'maxRetriesPerRequest', 'connectTimeout'] as const;

/**
 * The connection options of the cluster limits' Redis clients, in one place. The URL is parsed by ioredis itself
 * (a client constructed with `lazyConnect`, never connected): `redis://` and `rediss://` (TLS), `username` and
 * `password`, the database number as the path (`redis://host:6379/3`), and every query option ioredis reads
 * (`?family=6&connectionName=trainer`). The caller's `options` come next and win (TLS settings such as `ca` and
 * `servername` for `rediss://`, a password from a secret store); the limiter's own fail-fast settings come last.
 * Two hand-written parsers used to disagree (one dropped the database; neither knew TLS or usernames), and a
 * whitelist after them dropped every other URL option without a word.
 */
export function redisOptions(options: RedisLimitsOptions): RedisOptions {
  const extra = options.options;
  if (extra !== undefined) {
    if (typeof extra !== 'object' || extra === null || Array.isArray(extra)) {
      throw new InvalidOptionsError(
        `Expected \`limits.redis.options\` to be an object of ioredis options, got \`${JSON.stringify(extra)}\``,
      );
    }
    for (const key of OWN_OPTIONS) {
      if (key in extra) {
        throw new InvalidOptionsError(
          `Expected \`limits.redis.options\` not to set \`${key}\` (the limiter sets it to fail fast; use \`limits.redis.timeoutMs\` for the connect timeout), got \`${JSON.stringify((extra as Record<string, unknown>)[key])}\``,
        );
      }
    }
  }
  const parser = new IORedis(options.url, { lazyConnect: true });
  // Everything ioredis resolved from the URL (its defaults included, which are what it would use anyway).
  const { lazyConnect: _lazy, ...fromUrl } = parser.options;
  parser.disconnect();
  return {
    ...fromUrl,
    ...extra,
    lazyConnect: false,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: options.timeoutMs ?? 1000,
  };
}
