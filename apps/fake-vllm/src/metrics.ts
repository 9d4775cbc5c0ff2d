import type { EngineHost } from './engine-host.js';
import { FINISHED_REASONS } from './engine-metrics.js';
import { FAULT_NAMES } from './faults.js';
import { type Histogram, prometheusFloat } from './histogram.js';

/** Prometheus label values are quoted strings: escape what would end them. */
function labelValue(value: string): string {
  return value.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n');
}

/**
 * Prometheus text for engines, named and labelled as vLLM's `PrometheusStatLogger` writes them
 * (`vllm/v1/metrics/loggers.py`): every series has `model_name` and `engine` (each fake engine is its own vLLM
 * server, engine index 0); counters are `<name>_total` under a `# TYPE <name> counter`; values and bucket bounds
 * are floats as prometheus_client writes them. `fake_vllm:*` series are fake-vllm's own.
 */
export function renderEngineMetrics(hosts: readonly EngineHost[]): string {
  let text = '';
  const labels = (host: EngineHost, extra = '') =>
    `model_name="${labelValue(host.options.model)}",engine="0"${extra === '' ? '' : `,${extra}`}`;
  const header = (name: string, help: string, type: 'gauge' | 'counter' | 'histogram') => {
    text += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
  };
  const series = (name: string, help: string, type: 'gauge' | 'counter', value: (host: EngineHost) => number) => {
    header(name, help, type);
    const sample = type === 'counter' ? `${name}_total` : name;
    for (const host of hosts) text += `${sample}{${labels(host)}} ${prometheusFloat(value(host))}\n`;
  };
  const histogram = (name: string, help: string, pick: (host: EngineHost) => Histogram) => {
    header(name, help, 'histogram');
    for (const host of hosts) text += pick(host).render(name, labels(host));
  };

  series(
    'vllm:num_requests_running',
    'Number of requests in model execution batches.',
    'gauge',
    (host) => host.engine.counters.running,
  );
  series(
    'vllm:num_requests_waiting',
    'Number of requests waiting to be processed.',
    'gauge',
    (host) => host.engine.counters.waiting,
  );
  header(
    'vllm:num_requests_waiting_by_reason',
    "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
    'gauge',
  );
  for (const host of hosts) {
    // Every waiting request here waits for capacity: nothing defers one (no LoRA budget, no KV transfer).
    text += `vllm:num_requests_waiting_by_reason{${labels(host, 'reason="capacity"')}} ${prometheusFloat(host.engine.counters.waiting)}\n`;
    text += `vllm:num_requests_waiting_by_reason{${labels(host, 'reason="deferred"')}} 0.0\n`;
  }
  header(
    'vllm:engine_sleep_state',
    'Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.',
    'gauge',
  );
  for (const host of hosts) {
    const level = host.sleepLevel;
    const states: Array<[string, boolean]> = [
      ['awake', !host.isSleeping],
      ['weights_offloaded', host.isSleeping && level === 1],
      ['discard_all', host.isSleeping && level === 2],
    ];
    for (const [state, on] of states) {
      text += `vllm:engine_sleep_state{${labels(host, `sleep_state="${state}"`)}} ${on ? '1.0' : '0.0'}\n`;
    }
  }
  // BlockPool.get_usage (vllm/v1/core/block_pool.py): 1 - free / total, where free includes cached blocks no
  // running request holds. So: blocks held by running sequences over the pool.
  series(
    'vllm:kv_cache_usage_perc',
    'KV-cache usage. 1 means 100 percent usage.',
    'gauge',
    (host) => host.engine.kv.usage,
  );
  // PrefixCacheStats.record(num_tokens, num_hits) per sequence at admission (vllm/v1/core/kv_cache_manager.py).
  series(
    'vllm:prefix_cache_queries',
    'Prefix cache queries, in terms of number of queried tokens.',
    'counter',
    (host) => host.engine.kv.queryTokens,
  );
  series(
    'vllm:prefix_cache_hits',
    'Prefix cache hits, in terms of number of cached tokens.',
    'counter',
    (host) => host.engine.kv.hitTokens,
  );
  series('vllm:num_preemptions', 'Cumulative number of preemption from the engine.', 'counter', () => 0);
  series(
    'vllm:prompt_tokens',
    'Number of prefill tokens processed.',
    'counter',
    (host) => host.engine.counters.promptTokens,
  );
  header('vllm:prompt_tokens_by_source', 'Number of prompt tokens by source.', 'counter');
  for (const host of hosts) {
    const { queryTokens, hitTokens } = host.engine.kv;
    const sources: Array<[string, number]> = [
      ['local_compute', queryTokens - hitTokens],
      ['local_cache_hit', hitTokens],
      ['external_kv_transfer', 0],
    ];
    for (const [source, value] of sources) {
      text += `vllm:prompt_tokens_by_source_total{${labels(host, `source="${source}"`)}} ${prometheusFloat(value)}\n`;
    }
  }
  series(
    'vllm:prompt_tokens_cached',
    'Number of cached prompt tokens (local + external).',
    'counter',
    (host) => host.engine.kv.hitTokens,
  );
  series(
    'vllm:generation_tokens',
    'Number of generation tokens processed.',
    'counter',
    (host) => host.engine.counters.generationTokens,
  );
  header('vllm:request_success', 'Count of successfully processed requests.', 'counter');
  for (const host of hosts) {
    for (const reason of FINISHED_REASONS) {
      text += `vllm:request_success_total{${labels(host, `finished_reason="${reason}"`)}} ${prometheusFloat(host.metrics.finishedByReason[reason])}\n`;
    }
  }
  histogram(
    'vllm:request_prompt_tokens',
    'Number of prefill tokens processed.',
    (host) => host.metrics.promptTokensHistogram,
  );
  histogram(
    'vllm:request_generation_tokens',
    'Number of generation tokens processed.',
    (host) => host.metrics.generationTokensHistogram,
  );
  histogram('vllm:request_params_n', 'Histogram of the n request parameter.', (host) => host.metrics.nHistogram);
  histogram(
    'vllm:request_params_max_tokens',
    'Histogram of the max_tokens request parameter.',
    (host) => host.metrics.maxTokensHistogram,
  );
  histogram(
    'vllm:time_to_first_token_seconds',
    'Histogram of time to first token in seconds.',
    (host) => host.engine.ttftHistogram,
  );
  histogram(
    'vllm:inter_token_latency_seconds',
    'Histogram of inter-token latency in seconds.',
    (host) => host.engine.itlHistogram,
  );
  histogram(
    'vllm:e2e_request_latency_seconds',
    'Histogram of e2e request latency in seconds.',
    (host) => host.metrics.e2eHistogram,
  );
  histogram(
    'vllm:request_queue_time_seconds',
    'Histogram of time spent in WAITING phase for request.',
    (host) => host.metrics.queueHistogram,
  );

  series(
    'fake_vllm:requests_cancelled',
    'Requests whose client disconnected before the end.',
    'counter',
    (host) => host.engine.counters.cancelled,
  );
  series(
    'fake_vllm:requests_aborted',
    'Requests ended with finish_reason abort.',
    'counter',
    (host) => host.engine.counters.aborted,
  );
  series('fake_vllm:connections_open', 'Open TCP connections.', 'gauge', (host) => host.transport.connectionsOpen);
  series(
    'fake_vllm:max_concurrent_requests',
    'Highest running + waiting requests seen at once.',
    'gauge',
    (host) => host.engine.counters.maxInFlight,
  );
  header('fake_vllm:faults_injected', 'Faults injected, by name.', 'counter');
  for (const host of hosts) {
    for (const name of FAULT_NAMES) {
      text += `fake_vllm:faults_injected_total{${labels(host, `fault="${name}"`)}} ${prometheusFloat(host.injector.injected[name])}\n`;
    }
  }
  return text;
}
