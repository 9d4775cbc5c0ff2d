import { accessSync, constants, mkdirSync, readFileSync } from 'node:fs';
import { connectionBudget, ephemeralPortRange, isInferenceError, RemoteInferenceClient } from 'remote-inference-client';
import { request } from 'undici';
import { SweepConfigError } from './errors.js';
import type { SweepOptions } from './options.js';

/** The soft open-file limit of this process (inherited by the workers), or Infinity when unknown. */
export function openFileLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((entry) => entry.startsWith('Max open files'));
    const limit = Number(line?.split(/\s+/)[3]);
    return Number.isFinite(limit) ? limit : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/** Descriptors a worker keeps for itself (IPC, the JSONL file, DNS, ...) besides one socket per request. */
export const WORKER_RESERVED_FDS = 200;

/** Requests in flight at the sweep's peak: the largest step (closed loop) or the in-flight cap (open loop). */
export function peakInFlight(options: SweepOptions): number {
  const peak = Math.max(...options.steps);
  return options.arrival === 'closed' ? peak : Math.min(peak, options.maxConcurrency);
}

/**
 * Checks that the peak step fits this host: each worker's sockets within the open-file limit, and all connections
 * within the port budget, by the SDK's own rule ({@link connectionBudget}: ports x engines without source IPs, each
 * destination having its own range; ports x source IPs with them, one range shared by ALL engines). Fails fast with
 * advice; returns notes for the log. `portRange` is injectable for tests.
 */
export function preflight(
  options: SweepOptions,
  workers: number,
  fileLimit = openFileLimit(),
  portRange = ephemeralPortRange(),
): string[] {
  const notes: string[] = [];
  if (fileLimit === Number.POSITIVE_INFINITY) notes.push('open-file limit unknown (no /proc/self/limits)');
  const peak = peakInFlight(options);
  const perWorker = Math.ceil(peak / workers) + WORKER_RESERVED_FDS;
  if (perWorker > fileLimit) {
    throw new SweepConfigError(
      `A worker would need ~${perWorker} descriptors but the limit is ${fileLimit}: raise \`ulimit -n\` or pass --workers ${Math.ceil(peak / (fileLimit - WORKER_RESERVED_FDS))}`,
    );
  }
  if (portRange === undefined) {
    notes.push(`file limit ${fileLimit}, ephemeral port range unknown, ~${perWorker} sockets per worker`);
    return notes;
  }
  const engines = options.targets.length || options.fake.engines;
  // `--mode direct` uses a stock undici Agent, which binds no source address.
  const sourceIps = options.mode === 'sdk' ? options.sourceIps.length : 0;
  const budget = connectionBudget(portRange.size, sourceIps, engines);
  if (peak > budget) {
    const basis =
      sourceIps > 0
        ? `${sourceIps} source IP(s), shared by all ${engines} engines`
        : `${engines} engine(s), each with its own range`;
    const advice =
      sourceIps > 0
        ? `pass --source-ips auto:${Math.ceil(peak / portRange.size)} or more`
        : `add engines or pass --source-ips auto:${Math.ceil(peak / portRange.size)}`;
    throw new SweepConfigError(
      `~${peak} connections at the peak step exceed this host's port budget of ${budget} (${portRange.size} ephemeral ports ${portRange.low}-${portRange.high} x ${basis}): ${advice}, or widen net.ipv4.ip_local_port_range`,
    );
  }
  notes.push(
    `file limit ${fileLimit}, ephemeral ports ${portRange.low}-${portRange.high}, port budget ${budget}, ~${perWorker} sockets per worker`,
  );
  return notes;
}

/**
 * The client options the workers will use, checked here by the SDK itself (source IPs assigned to this host, ...),
 * so that a bad `--source-ips` is one line before anything starts, not a stack from every worker.
 */
export async function checkClientOptions(options: SweepOptions): Promise<void> {
  if (options.mode !== 'sdk' || options.sourceIps.length === 0) return;
  try {
    const client = new RemoteInferenceClient({ engines: ['http://127.0.0.1:1'], sourceIps: options.sourceIps });
    await client.close();
  } catch (error) {
    if (isInferenceError(error)) throw new SweepConfigError(`Invalid \`--source-ips\`: ${error.message}`);
    throw error;
  }
}

/** Creates `--out` and checks it is writable, before any engine or worker starts. */
export function prepareOutDir(outDir: string): void {
  try {
    mkdirSync(outDir, { recursive: true });
    accessSync(outDir, constants.W_OK);
  } catch (error) {
    throw new SweepConfigError(
      `Cannot write results to \`--out ${outDir}\` (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): pick a writable directory`,
    );
  }
}

/** Largest `/v1/models` answer read (a real one is a few KB; one that never ends must not be buffered). */
export const MAX_MODELS_BODY_BYTES = 1024 * 1024;

/**
 * `--target` engines: each must answer `GET /v1/models` within `timeoutMs` (the whole answer, body included, at
 * most {@link MAX_MODELS_BODY_BYTES}) with OpenAI's model list, and serve `--model` when one is given; fails fast
 * with what the engine said, so a typo does not become a step of 100% errors. Engines without `/v1/models` (some
 * routers) only get a note.
 */
export async function checkTargets(options: SweepOptions, timeoutMs = 5000): Promise<string[]> {
  const notes: string[] = [];
  await Promise.all(
    options.targets.map(async (target) => {
      const fail = (what: string) => new SweepConfigError(`\`--target ${target}\` ${what}`);
      // One deadline for headers and body: undici's bodyTimeout is per chunk, and a trickle never trips it.
      const signal = AbortSignal.timeout(timeoutMs);
      let statusCode: number;
      let text = '';
      try {
        const response = await request(`${target.replace(/\/+$/, '')}/v1/models`, {
          headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
          signal,
        });
        statusCode = response.statusCode;
        if (statusCode !== 200) {
          response.body.destroy();
        } else {
          const chunks: Buffer[] = [];
          let bytes = 0;
          for await (const chunk of response.body as AsyncIterable<Buffer>) {
            bytes += chunk.length;
            if (bytes > MAX_MODELS_BODY_BYTES) {
              response.body.destroy();
              throw fail(
                `answered GET /v1/models with more than ${MAX_MODELS_BODY_BYTES} bytes: is it an OpenAI-compatible engine?`,
              );
            }
            chunks.push(chunk);
          }
          text = Buffer.concat(chunks).toString('utf8');
        }
      } catch (error) {
        if (error instanceof SweepConfigError) throw error;
        const cause = signal.aborted
          ? `no whole answer within ${timeoutMs} ms`
          : ((error as { code?: string }).code ?? (error as Error).message);
        throw fail(`did not answer GET /v1/models (${cause}): check the URL and that the engine is up`);
      }
      if (statusCode !== 200) {
        if (statusCode === 401 || statusCode === 403)
          throw fail(`refused GET /v1/models with ${statusCode}: pass its key with --api-key`);
        notes.push(`${target}: GET /v1/models answered ${statusCode}; --model not checked`);
        return;
      }
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        throw fail(
          `answered GET /v1/models with something that is not JSON (${JSON.stringify(text.slice(0, 40))}...): is it an OpenAI-compatible engine?`,
        );
      }
      const data = (body as { data?: unknown } | null)?.data;
      if (!Array.isArray(data))
        throw fail(
          `answered GET /v1/models without a \`data\` list of models (got ${JSON.stringify(body).slice(0, 60)}): is it an OpenAI-compatible engine?`,
        );
      const served = data
        .map((model) => (model as { id?: unknown } | null)?.id)
        .filter((id): id is string => typeof id === 'string');
      if (options.model !== undefined && !served.includes(options.model)) {
        throw fail(
          `serves ${served.map((id) => `\`${id}\``).join(', ') || 'no model'}, not \`--model ${options.model}\``,
        );
      }
      notes.push(`${target} serves ${served.join(', ')}`);
    }),
  );
  return notes;
}
