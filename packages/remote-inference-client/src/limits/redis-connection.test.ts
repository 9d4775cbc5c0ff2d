import { describe, expect, it } from 'vitest';
import { InvalidOptionsError } from '../errors.js';
import { redisOptions } from './redis-connection.js';

describe('redisOptions', () => {
  const parsed = (url: string) => {
    const { host, port, username, password, db, tls } = redisOptions({ url, id: 'x' });
    return { host, port, username, password, db, tls: tls !== undefined };
  };

  it('reads host, port, username, password and database from the URL', () => {
    expect(parsed('redis://alice:s%40cret@10.1.2.3:6380/3')).toEqual({
      host: '10.1.2.3',
      port: 6380,
      username: 'alice',
      password: 's@cret',
      db: 3,
      tls: false,
    });
  });

  it('a password without a username, and the defaults', () => {
    expect(parsed('redis://:pw@127.0.0.1')).toMatchObject({ host: '127.0.0.1', port: 6379, password: 'pw', db: 0 });
  });

  it('rediss:// turns TLS on', () => {
    expect(parsed('rediss://cache.internal:6380/1')).toMatchObject({ host: 'cache.internal', db: 1, tls: true });
  });

  it('keeps every option ioredis reads from the URL query, not only a whitelist', () => {
    const options = redisOptions({ url: 'redis://127.0.0.1:6380/2?family=6&connectionName=trainer-7', id: 'x' });
    expect(options).toMatchObject({ port: 6380, db: 2, family: 6, connectionName: 'trainer-7' });
  });

  it("the caller's ioredis options win over the URL's; the limiter's fail-fast settings win over both", () => {
    const tls = { ca: '-----BEGIN CERTIFICATE-----', servername: 'redis.internal' };
    const options = redisOptions({
      url: 'rediss://alice:from-url@10.0.0.5:6380/1',
      id: 'x',
      timeoutMs: 250,
      options: { tls, password: 'from-secret-store', connectionName: 'rollouts' },
    });
    expect(options).toMatchObject({
      host: '10.0.0.5',
      username: 'alice',
      password: 'from-secret-store',
      db: 1,
      tls,
      connectionName: 'rollouts',
      lazyConnect: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 250,
    });
  });

  it('options the limiter owns, or options that are not an object, are typed errors naming the field', () => {
    for (const own of ['lazyConnect', 'enableOfflineQueue', 'maxRetriesPerRequest', 'connectTimeout']) {
      expect(() => redisOptions({ url: 'redis://127.0.0.1', id: 'x', options: { [own]: 1 } as never })).toThrow(
        new RegExp(`\`limits.redis.options\` not to set \`${own}\``),
      );
    }
    expect(() => redisOptions({ url: 'redis://127.0.0.1', id: 'x', options: 'tls' as never })).toThrow(
      InvalidOptionsError,
    );
  });
});
