import { describe, expect, it } from 'vitest';
import { parseEngineLoad } from './engine-metrics.js';

// Shaped as vLLM's PrometheusStatLogger writes /metrics (vllm/v1/metrics/loggers.py): HELP/TYPE lines, `model_name`
// and `engine` labels, floats as prometheus_client prints them, counters with `_total`.
const body = `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="my model {v2}"} 12.0
vllm:num_requests_running{engine="1",model_name="my model {v2}"} 20.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="my model {v2}"} 3.0
vllm:num_requests_waiting{engine="1",model_name="my model {v2}"} 0.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 99.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="my model {v2}"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="my model {v2}"} 0.5
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="my model {v2}"} 1.5e+06
vllm:prompt_tokens_total{engine="1",model_name="my model {v2}"} 500000.0
`;

describe('reading an engine load from /metrics', () => {
  it('sums running and waiting over the engines behind an endpoint, takes the fullest KV cache', () => {
    expect(parseEngineLoad(body)).toEqual({ running: 32, waiting: 3, kvCacheUsage: 0.5, counter: 2_000_000 });
  });

  it('unlabelled samples, a timestamp after the value, and CRLF are read', () => {
    expect(parseEngineLoad('vllm:num_requests_running 7 1700000000000\r\nvllm:num_requests_waiting 2\r\n')).toEqual({
      running: 7,
      waiting: 2,
      kvCacheUsage: undefined,
      counter: undefined,
    });
  });

  it('a body without vLLM gauges is no reading', () => {
    expect(parseEngineLoad('{"detail":"Not Found"}')).toBeUndefined();
    expect(parseEngineLoad('# HELP vllm:num_requests_running only help\n')).toBeUndefined();
  });
});
