export {
  type BatchResult,
  type ClientStats,
  type EngineConnectionStats,
  type GenerateOptions,
  RemoteInferenceClient,
  type RequestOptions,
} from './client/client.js';
// The control plane and streams come from a client (`client.control`, `stream: true`); callers never construct
// them, so they are published as types only: `new ControlPlane()` or `new ChunkStream()` does not type-check.
export type { ControlPlane, EngineResult } from './client/control-plane.js';
export type { RemoteInferenceClientOptions, RetryOptions, TimeoutOptions, TransportOptions } from './client/options.js';
export { REQUEST_CHANNEL, type RequestStats } from './client/request-stats.js';
export type { Chat, ChatCompletions, Completions } from './client/resources.js';
export { isRetryable, parseRetryAfter } from './client/retry-policy.js';
export type * from './client/wire-types.js';
export * from './errors.js';
export type { LimitsOptions } from './limits/admission.js';
export type { AdaptiveCapOptions, CapState } from './limits/engine-capacity.js';
export type { RedisLimitsOptions } from './limits/qps-limiter.js';
export type { EngineHealthState, HealthOptions } from './routing/engine-health.js';
export {
  type EngineView,
  LeastOutstandingPolicy,
  PowerOfTwoPolicy,
  RoundRobinPolicy,
  type RoutingContext,
  type RoutingPolicy,
  type RoutingPolicyName,
  type RoutingPreference,
  type SessionAffinityOptions,
  SessionAffinityPolicy,
} from './routing/policies.js';
export type { ChunkStream } from './streaming/chunk-stream.js';
export { type SseEvent, SseParser } from './streaming/sse-parser.js';
export type {
  AttemptFlow,
  AttemptRequest,
  AttemptResult,
  AttemptSink,
  AttemptTiming,
  SendAttempt,
} from './transport/attempt.js';
export { connectionBudget, ephemeralPortRange } from './transport/port-budget.js';
