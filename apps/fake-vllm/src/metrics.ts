import type { EngineHost } from './engine-host.js';
import { FAULT_NAMES } from './faults.js';

/**
 * Prometheus text for engines, with vLLM's metric names (`vllm:num_requests_running`, TTFT and inter-token
 * histograms, token counters) plus `fake_vllm:*` counters of injected faults and connections.
 */
export function renderEngineMetrics(servers: readonly EngineHost[]): string {
  let text = '';
  const gauge = (name: string, help: string, type: 'gauge' | 'counter', value: (server: EngineHost) => number) => {
    text += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
    for (const server of servers) text += `${name}{model_name="${server.options.model}"} ${value(server)}\n`;
  };
  gauge(
    'vllm:num_requests_running',
    'Number of requests in model execution batches.',
    'gauge',
    (s) => s.engine.counters.running,
  );
  gauge(
    'vllm:num_requests_waiting',
    'Number of requests waiting to be processed.',
    'gauge',
    (s) => s.engine.counters.waiting,
  );
  gauge(
    'vllm:prompt_tokens_total',
    'Number of prefill tokens processed.',
    'counter',
    (s) => s.engine.counters.promptTokens,
  );
  gauge(
    'vllm:generation_tokens_total',
    'Number of generation tokens processed.',
    'counter',
    (s) => s.engine.counters.generationTokens,
  );
  gauge(
    'vllm:request_success_total',
    'Count of successfully processed requests.',
    'counter',
    (s) => s.engine.counters.completed,
  );
  gauge(
    'fake_vllm:requests_cancelled_total',
    'Requests whose client disconnected before the end.',
    'counter',
    (s) => s.engine.counters.cancelled,
  );
  gauge(
    'fake_vllm:requests_aborted_total',
    'Requests ended with finish_reason abort.',
    'counter',
    (s) => s.engine.counters.aborted,
  );
  gauge('fake_vllm:connections_open', 'Open TCP connections.', 'gauge', (s) => s.stats().connectionsOpen);
  gauge(
    'fake_vllm:max_concurrent_requests',
    'Highest running + waiting requests seen at once.',
    'gauge',
    (s) => s.engine.counters.maxInFlight,
  );
  const histograms = [
    ['vllm:time_to_first_token_seconds', 'Histogram of time to first token in seconds.', 'ttftHistogram'],
    ['vllm:inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.', 'itlHistogram'],
    ['vllm:e2e_request_latency_seconds', 'Histogram of end to end request latency in seconds.', 'e2eHistogram'],
    ['vllm:request_queue_time_seconds', 'Histogram of time spent in WAITING phase for request.', 'queueHistogram'],
  ] as const;
  for (const [name, help, field] of histograms) {
    text += `# HELP ${name} ${help}\n# TYPE ${name} histogram\n`;
    for (const server of servers) text += server.engine[field].render(name, `model_name="${server.options.model}"`);
  }
  text +=
    '# HELP fake_vllm:faults_injected_total Faults injected, by name.\n# TYPE fake_vllm:faults_injected_total counter\n';
  for (const server of servers) {
    for (const name of FAULT_NAMES) {
      text += `fake_vllm:faults_injected_total{model_name="${server.options.model}",fault="${name}"} ${server.injector.injected[name]}\n`;
    }
  }
  return text;
}
