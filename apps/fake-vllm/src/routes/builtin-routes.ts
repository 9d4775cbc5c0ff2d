import { controlRoutes } from './control-routes.js';
import { loraRoutes } from './lora-routes.js';
import { openaiRoutes } from './openai-routes.js';
import type { FakeRoute } from './route.js';

/** Every route fake-vllm serves by itself, in one table for every transport. */
export const builtinRoutes: readonly FakeRoute[] = [...openaiRoutes, ...loraRoutes, ...controlRoutes];
