import { describe, expect, it } from 'vitest';
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
});
