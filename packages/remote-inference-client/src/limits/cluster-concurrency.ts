import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Redis as IORedis } from 'ioredis';
import { LimiterUnavailableError } from '../errors.js';
import type { RedisLimitsOptions } from './qps-limiter.js';
import { redisOptions } from './redis-connection.js';

/**
 * Every change to the shared budget, in one atomic script, so the holders' total and the shares are always computed
 * from one consistent state.
 *
 * KEYS[1]: hash id -> slots held; KEYS[2]: hash id -> demand (in flight + queued) of the processes that want slots.
 * ARGV: id, delta (> 0 asks for up to that many slots, < 0 gives that many back, 0 only reports), demand, budget,
 * heartbeat key prefix, heartbeat TTL (ms), rotation period (ms), claim (requests the caller has running).
 * Returns { granted, share, contended, held, total }: `share` is this process's max-min fair share of the budget;
 * `contended` is 1 when processes below their share wait for more slots than are free, so processes above theirs
 * must yield; `held` is what Redis counts for the caller after this call (the caller corrects its own count to it)
 * and `total` the holders' total (above the budget only after a re-registration, below).
 *
 * Holders whose heartbeat key has expired are evicted (slots and demand): a crashed process's slots come back. A
 * process that was only stalled (SIGSTOP, a long GC pause, a frozen VM) past the TTL comes back with requests still
 * running: the caller's entry is below its claim, so it is re-registered at its claim. The total may then exceed
 * the budget (those requests were admitted legitimately and cannot be cut); nothing is granted to anyone until it is
 * back within, and every process gives its unused slots back meanwhile (see {@link ClusterConcurrency}).
 * Shares are water-filling over the live demands: a process wanting less than an equal split gets what it wants,
 * the rest is split equally; the remainder of an uneven split (40 / 3 = 13 r 1) goes to the processes in turn,
 * by Redis's clock (TIME), so over a few periods each gets the same. Scripts may call TIME before writes since
 * Redis 5 (effects replication; the default and only mode from Redis 7).
 */
const BALANCE = `
if redis.replicate_commands then redis.replicate_commands() end
local id = ARGV[1]
local delta = tonumber(ARGV[2])
local budget = tonumber(ARGV[4])
local demand = math.min(tonumber(ARGV[3]), budget)
local alive = ARGV[5]
redis.call('SET', alive .. id, '1', 'PX', ARGV[6])
if demand > 0 then redis.call('HSET', KEYS[2], id, demand) else redis.call('HDEL', KEYS[2], id) end
if delta < 0 and redis.call('HINCRBY', KEYS[1], id, delta) <= 0 then redis.call('HDEL', KEYS[1], id) end
local held, total = {}, 0
local list = redis.call('HGETALL', KEYS[1])
for i = 1, #list, 2 do
  if redis.call('EXISTS', alive .. list[i]) == 0 then
    redis.call('HDEL', KEYS[1], list[i])
  else
    held[list[i]] = tonumber(list[i + 1])
    total = total + held[list[i]]
  end
end
local claim = tonumber(ARGV[8])
if (held[id] or 0) < claim then
  redis.call('HSET', KEYS[1], id, claim)
  total = total + claim - (held[id] or 0)
  held[id] = claim
end
local wanting = {}
list = redis.call('HGETALL', KEYS[2])
for i = 1, #list, 2 do
  if redis.call('EXISTS', alive .. list[i]) == 0 then
    redis.call('HDEL', KEYS[2], list[i])
  else
    wanting[#wanting + 1] = { id = list[i], demand = tonumber(list[i + 1]) }
  end
end
table.sort(wanting, function(a, b)
  if a.demand ~= b.demand then return a.demand < b.demand end
  return a.id < b.id
end)
local share = {}
local left, count, first = budget, #wanting, 1
while first <= #wanting and wanting[first].demand * count <= left do
  share[wanting[first].id] = wanting[first].demand
  left = left - wanting[first].demand
  count = count - 1
  first = first + 1
end
if count > 0 then
  local rest = {}
  for i = first, #wanting do rest[#rest + 1] = wanting[i].id end
  table.sort(rest)
  local base = math.floor(left / count)
  local extra = left - base * count
  local now = redis.call('TIME')
  local turn = math.floor((tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)) / tonumber(ARGV[7]))
  for i = 1, count do
    share[rest[i]] = base + ((((i - 1 - turn) % count) < extra) and 1 or 0)
  end
end
local mine = held[id] or 0
local myShare = share[id] or 0
local granted = 0
if delta > 0 then
  granted = math.min(delta, myShare - mine, budget - total)
  if granted > 0 then
    redis.call('HINCRBY', KEYS[1], id, granted)
    held[id] = mine + granted
    total = total + granted
  else
    granted = 0
  end
end
local owed = 0
for other, fair in pairs(share) do
  local has = held[other] or 0
  if fair > has then owed = owed + fair - has end
end
return { granted, myShare, (owed > budget - total) and 1 or 0, held[id] or 0, total }`;

/** What {@link BALANCE} returns: granted, share, contended (0 or 1), the caller's slots, the holders' total. */
type Answer = [number, number, number, number, number];

/** In flight and queued in this process, as the scheduler counts them. */
export interface ClusterUsage {
  inFlight: number;
  queued: number;
}

/**
 * A concurrency budget shared by every process using the same Redis id, split fairly among the processes that
 * want it and never above it in total.
 *
 * Why: the first version let whoever took slots first keep them (a busy process never gives back), so one process
 * completed 4,239 requests and another 46 in one run; in a synchronous RL step the batch waits for the slowest
 * rollout worker, so a starved worker is a stalled step.
 *
 * How: each process reports its demand (in flight + queued) with every Redis call and learns its fair share (see
 * {@link BALANCE}: max-min fair, so an idle process's share goes to the busy ones). It takes up to its share in one
 * round trip and admits while in flight < slots held; the hot path makes no Redis call. Every `rebalanceIntervalMs`
 * a process with slots or demand re-reports (this is also its heartbeat) and gets its share again. When processes
 * below their share are waiting (`contended`), a process above its share stops admitting beyond it and gives slots
 * back as its requests finish instead of re-using them; releases in one event-loop turn go in one call. A running
 * request is never cut, so shares move as fast as requests finish. A process that dies stops its heartbeat; its
 * slots and demand are evicted after `heartbeatTtlMs`.
 *
 * A stalled process (stopped, not dead) is evicted the same way, and its slots go to others while its requests may
 * still run. The rule that keeps the cluster within the budget when it wakes up:
 * - It does not trust slots it has not had confirmed within the heartbeat TTL: past `heartbeatTtlMs` since the last
 *   call Redis answered was sent, it admits nothing new until Redis answers again (the answer comes first on wake-up
 *   only by luck: the responses that finished during the stall are read in the same event-loop turn).
 * - Every answer says what Redis counts for it; its own count is corrected to that (plus its releases still on the
 *   way). Before, an evicted process kept believing it held its slots and admitted on them, and its later releases
 *   deleted its Redis entry: two processes each held the whole budget.
 * - Every call carries the number of requests it has running; an evicted process is re-registered with them, so
 *   Redis counts what really runs. While that leaves the total above the budget, no process admits a new request and
 *   every one gives back each slot its requests free, until the total is within the budget again.
 */
export class ClusterConcurrency {
  private readonly redis: IORedis;
  private readonly id = randomUUID();
  private readonly keys: [string, string];
  private readonly alivePrefix: string;
  /** Idle hysteresis: slots beyond in-flight are kept up to this many, so a busy process does not churn. */
  private readonly batch: number;
  /** A holder whose heartbeat is this old is dead: its slots come back. */
  private readonly heartbeatTtlMs = 3000;
  /**
   * How often a process with slots or demand re-reports and learns its share: bounds how soon a busy process
   * sees that another one went idle or came back (the target is within 1 s). 5 small scripts per second per process.
   */
  private readonly rebalanceIntervalMs = 200;
  /** The remainder of an uneven split moves to the next process this often. */
  private readonly rotationMs = 1000;
  /** A process below its share that got nothing (slots still held by processes yielding them) asks again after this. */
  private readonly retryMs = 20;
  private readonly timer: NodeJS.Timeout;
  /** Bounds an ask's wait for the connection. */
  private connectTimer: NodeJS.Timeout | undefined;
  /** An ask is on the wire. */
  private asking = false;
  /** Got nothing below its share: wait `retryMs` before asking again. */
  private backingOff = false;
  private releasing = 0;
  private closed = false;
  private local = false;
  /** This process's fair share, as Redis last computed it; the whole budget until the first answer. */
  private share: number;
  /** Processes below their share are waiting for slots: a process above its share must yield. */
  private contended = false;
  /** The demand Redis last heard from this process. */
  private reported = 0;
  /** The holders' total is above the budget (after a stalled process was re-registered): admit nothing, give back. */
  private over = false;
  /** When the last call that Redis answered was sent: the heartbeat it carried lasts `heartbeatTtlMs` from then. */
  private confirmedAtMs = Number.NEGATIVE_INFINITY;
  /** Changes to `held` made here whose calls Redis has not answered yet (releases, negative). */
  private unconfirmed = 0;
  /** Slots this process holds: Redis's count from its last answer, less the releases it has not applied yet. */
  held = 0;
  failure: Error | undefined;
  /** Called when more may be admitted (slots arrived, a share grew, or Redis failed). */
  onAvailable: () => void = () => {};
  /** The scheduler's counts, read when re-reporting demand. */
  usage: () => ClusterUsage = () => ({ inFlight: 0, queued: 0 });

  constructor(
    private readonly max: number,
    private readonly options: RedisLimitsOptions,
  ) {
    // Every command is bounded: a Redis that stops answering (stopped, overloaded) is an outage like a lost
    // connection (fail-open or fail-closed), not requests queued until their deadlines and a close() that hangs.
    this.redis = new IORedis({ ...redisOptions(options), commandTimeout: options.timeoutMs ?? 1000 });
    this.redis.on('error', (error: Error) => this.onRedisError(error));
    const prefix = `remote-inference-client:${options.id}:concurrency`;
    this.keys = [prefix, `${prefix}:demand`];
    this.alivePrefix = `remote-inference-client:${options.id}:alive:`;
    this.batch = Math.max(1, Math.min(64, Math.ceil(max / 32)));
    this.share = max;
    this.timer = setInterval(() => this.rebalance(), this.rebalanceIntervalMs);
    this.timer.unref();
  }

  /** How many requests this process may have in flight now. */
  get limit(): number {
    if (this.local) return this.max;
    if (this.over || this.unconfirmedLease()) return 0;
    return this.contended ? Math.min(this.held, this.share) : this.held;
  }

  /** No answer from Redis for a heartbeat TTL: another process may have evicted this one and taken its slots. */
  private unconfirmedLease(): boolean {
    return this.held > 0 && performance.now() - this.confirmedAtMs >= this.heartbeatTtlMs;
  }

  private onRedisError(error: Error): void {
    if (this.closed) return;
    if ((this.options.onUnavailable ?? 'fail-open') === 'fail-closed') {
      this.failure = new LimiterUnavailableError(`Cluster concurrency limiter unreachable: ${error.message}`, error);
    } else if (!this.local) {
      // Fail open: this process alone may use the whole budget until Redis is back.
      this.local = true;
      this.held = this.max;
    }
    this.onAvailable();
  }

  /**
   * One script call. `released` is what this call gives back that `held` already lost (counted as unconfirmed);
   * `claim` the requests running here, re-registered if Redis evicted this process. `onAnswer` runs in the same
   * continuation that confirms `released`: answers that arrive in one Redis reply settle one after another, so an
   * answer is never learned with a later call's release already confirmed (that counted the release twice: the
   * process admitted on slots it had given back, and the cluster ran above its budget).
   */
  private call(
    delta: number,
    demand: number,
    released: number,
    claim: number,
    onAnswer: (answer: Answer) => void,
  ): Promise<void> {
    const sentAtMs = performance.now();
    const settled = () => {
      this.unconfirmed += released;
    };
    return (
      this.redis.eval(
        BALANCE,
        2,
        ...this.keys,
        this.id,
        delta,
        demand,
        this.max,
        this.alivePrefix,
        this.heartbeatTtlMs,
        this.rotationMs,
        claim,
      ) as Promise<Answer>
    ).then(
      (answer) => {
        settled();
        this.confirmedAtMs = Math.max(this.confirmedAtMs, sentAtMs);
        onAnswer(answer);
      },
      (error: unknown) => {
        // Applied or not, the next answer's count says.
        settled();
        throw error;
      },
    );
  }

  /**
   * Takes in what Redis answered: its count of this process's slots (answers come in order on one connection, so it
   * reflects every call sent before and none sent after: the releases still unconfirmed are subtracted), the share,
   * whether to yield or to give everything unused back, and gives back what is above the share at once.
   */
  private learn([, share, contended, held, total]: Answer, demand: number): void {
    if (this.closed) return;
    this.failure = undefined;
    this.reported = demand;
    this.held = Math.max(0, Number(held) + this.unconfirmed);
    this.share = Number(share);
    this.contended = Number(contended) === 1;
    this.over = Number(total) > this.max;
    const { inFlight, queued } = this.usage();
    this.settle(inFlight, queued);
    this.onAvailable();
  }

  /** Asks Redis for slots when `demand` (in flight + queued + the request at hand) exceeds what is held. */
  want(demand: number): void {
    if (this.asking || this.backingOff || this.closed || this.local) return;
    // Slots not confirmed within the heartbeat TTL may be gone: ask Redis what it counts, whatever the demand.
    const unconfirmed = this.unconfirmedLease();
    if (demand <= this.held && !unconfirmed) return;
    const reported = Math.min(demand, this.max);
    // At its share, and Redis knows this demand: only a rebalance can bring more; asking would be a wasted call.
    if (this.held >= this.share && reported <= this.reported && !unconfirmed) return;
    this.asking = true;
    if (this.redis.status !== 'ready') {
      // Commands are not queued while connecting (so an outage fails fast): wait for the connection, bounded.
      this.connectTimer = setTimeout(() => {
        this.asking = false;
        this.onRedisError(new Error(`not connected within ${this.options.timeoutMs ?? 1000} ms`));
      }, this.options.timeoutMs ?? 1000);
      this.connectTimer.unref();
      this.redis.once('ready', () => {
        clearTimeout(this.connectTimer);
        this.asking = false;
        this.want(demand);
      });
      return;
    }
    this.call(Math.max(0, reported - this.held), reported, 0, this.usage().inFlight, (answer) => {
      this.asking = false;
      if (this.closed) return;
      if (Number(answer[0]) === 0 && Number(answer[3]) + this.unconfirmed < Number(answer[1])) {
        // Below its share with nothing free: the slots are held by processes that will yield them as their
        // requests finish. Ask again shortly, not in a loop.
        this.backingOff = true;
        setTimeout(() => {
          this.backingOff = false;
          if (!this.closed) this.onAvailable();
        }, this.retryMs).unref();
      }
      this.learn(answer, reported);
    }).catch((error: Error) => {
      this.asking = false;
      this.onRedisError(error);
    });
  }

  /**
   * Called as each request ends. Above its share while others wait, the process gives back what it no longer
   * uses; otherwise, idle, it gives back slots beyond in-flight plus one batch of headroom.
   */
  settle(inFlight: number, queued: number): void {
    if (this.local || this.closed) return;
    if (this.over) {
      // Above the budget (a stalled process came back with requests running): every slot freed goes back.
      if (this.held > inFlight) this.give(this.held - inFlight);
      return;
    }
    if (this.contended) {
      const surplus = this.held - Math.max(this.share, inFlight);
      if (surplus > 0) this.give(surplus);
      return;
    }
    if (queued > 0) return;
    const surplus = this.held - inFlight - this.batch;
    // Hysteresis: only give back a whole batch or more, so a busy process does not pay a round trip per request.
    if (surplus >= this.batch) this.give(surplus);
  }

  /** Gives slots back; releases in one event-loop turn go to Redis in one call. */
  private give(slots: number): void {
    this.held -= slots;
    this.unconfirmed -= slots;
    this.releasing += slots;
    if (this.releasing !== slots) return;
    setImmediate(() => {
      const slots = this.releasing;
      this.releasing = 0;
      if (this.closed || this.local || slots === 0) {
        this.unconfirmed += slots; // never sent
        return;
      }
      const { inFlight, queued } = this.usage();
      const demand = Math.min(inFlight + queued, this.max);
      this.call(-slots, demand, slots, inFlight, (answer) => this.learn(answer, demand)).catch((error: Error) =>
        this.onRedisError(error),
      );
    });
  }

  /**
   * Re-reports demand (the heartbeat) and learns the current share; an idle process gives everything back. After
   * an outage it is also what brings the process back: running alone (fail-open) it rejoins, failing requests
   * (fail-closed) it clears the failure, at the first answer.
   */
  private rebalance(): void {
    // Not connected: an ask waits for the connection (bounded) and ioredis reports a lost one as an error.
    if (this.closed || this.asking || this.redis.status !== 'ready') return;
    const { inFlight, queued } = this.usage();
    const demand = Math.min(inFlight + queued, this.max);
    if (this.local) {
      this.rejoin(inFlight, demand);
      return;
    }
    if (this.failure === undefined && this.held === 0 && demand === 0 && this.reported === 0) return;
    const idle = demand === 0 && this.held > 0 ? this.held : 0;
    if (idle > 0) {
      this.held = 0;
      this.unconfirmed -= idle;
    }
    this.call(-idle, demand, idle, inFlight, (answer) => this.learn(answer, demand)).catch((error: Error) =>
      this.onRedisError(error),
    );
  }

  /**
   * Redis answers again after this process ran alone on the whole budget (fail-open): it registers the requests it
   * runs (they may put the cluster above the budget for a while: then nobody admits until they end, as after a
   * stall) and takes its share again. Before, fail-open lasted for good: two processes sharing 40 ran 80 after a
   * Redis restart.
   */
  private rejoin(inFlight: number, demand: number): void {
    this.asking = true;
    this.call(0, demand, 0, inFlight, (answer) => {
      this.asking = false;
      if (this.closed || !this.local) return;
      this.local = false;
      // The local slots were never Redis's: what it counts for this process now is the claim (or more).
      this.held = 0;
      this.unconfirmed = 0;
      this.releasing = 0;
      this.learn(answer, demand);
    }).catch(() => {
      this.asking = false; // still unreachable: keep running alone, try again at the next heartbeat
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    clearTimeout(this.connectTimer);
    const slots = this.held + this.releasing;
    this.held = 0;
    this.releasing = 0;
    if (!this.local && (slots > 0 || this.reported > 0)) {
      // Nothing is claimed: the requests still settling are being aborted with the client.
      await this.call(-slots, 0, 0, 0, () => {}).catch(() => undefined);
    }
    this.redis.disconnect();
  }
}
