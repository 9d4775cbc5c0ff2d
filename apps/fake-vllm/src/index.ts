export { ControlClient, type ControlRequest, type ControlResponse, type FakeVllmControl } from './control-channel.js';
export type { EngineCounters, FinishReason, PauseMode } from './engine.js';
export type { FakeVllmStats } from './engine-group.js';
export { EngineHost, MAX_TALLIES, TALLY_HEADER, type TallyCounters, type TransportInfo } from './engine-host.js';
export { type EngineStats, TIMING_HEADERS } from './engine-server.js';
export { FakeVllmConfigError } from './errors.js';
export {
  BUILTIN_FAULT_PROFILES,
  FAULT_HEADER,
  FAULT_NAMES,
  type FaultName,
  type FaultProfile,
  type FaultRule,
  parseFaultHeader,
  parseFaultProfile,
} from './faults.js';
export { BLOCK_SIZE, blockHash, KvBlockPool } from './kv-block-pool.js';
export {
  IMAGE_PATCH_PIXELS,
  imageTokenCount,
  imageTokenId,
  MAX_IMAGE_BYTES,
  MAX_IMAGE_TOKENS,
  MAX_IMAGES_PER_PROMPT,
  type MultiModalFeatures,
  mmHash,
  REMOTE_IMAGE_TOKENS,
} from './multimodal.js';
export {
  type CapacityOptions,
  type ControlChannelOptions,
  type EngineOptions,
  type FakeVllmOptions,
  type LatencyOptions,
  PER_ENGINE_FIELDS,
  type PerEngineOptions,
  type RestartOptions,
  resolveFakeVllmOptions,
} from './options.js';
export {
  drawOutputLength,
  expectedOutputLength,
  type OutputLengthOptions,
  promptLengthKey,
  type ResolvedOutputLengths,
  resolveOutputLengths,
} from './output-lengths.js';
export { isPresetName, PRESETS, type PresetName, presetRoutes } from './presets/presets.js';
export { packRoutedExperts, type SkyrlPresetOptions, type SkyrlSession, skyrlRoutes } from './presets/skyrl.js';
export {
  type GenerationJob,
  HttpError,
  type ParseContext,
  parseChatRequest,
  parseCompletionRequest,
  parseGenerateRequest,
  renderChatPrompt,
  renderChatTokens,
} from './protocol.js';
export { type GenerationParser, serveGeneration } from './routes/generation-route.js';
export { type FakeRouteSource, loadRoutes } from './routes/load-routes.js';
export type {
  FakeRoute,
  HttpMethod,
  ResponseHeaders,
  ResponseWriter,
  RouteContext,
  RouteRequest,
  StaticRouteResponse,
} from './routes/route.js';
export { type FakeVllm, startFakeVllm } from './start.js';
export {
  CONTEXT_WINDOW,
  createRandom,
  DEFAULT_VOCAB_SIZE,
  detokenize,
  type ExpectedCompletion,
  type ExpectedCompletionOptions,
  eosTokenId,
  expectedCompletion,
  generatedTokenText,
  isEndOfSequence,
  nextTokenId,
  tokenize,
  tokenLogprob,
  tokenText,
} from './tokens.js';
