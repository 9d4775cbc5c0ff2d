import type { FakeRoute } from '../routes/route.js';
import { skyrlRoutes } from './skyrl.js';

/**
 * Built-in route presets, by name: the endpoints a trainer adds to the vLLM servers it launches, served by the
 * fake's engine, sessions and faults. Each engine builds its own (also in `processes` children), after the
 * built-in routes and before the `routes` option's.
 */
export const PRESETS = {
  /** No extra routes. */
  none: (): FakeRoute[] => [],
  /** NovaSky-AI/SkyRL's server and router additions (`skyrlRoutes()` with its defaults). */
  skyrl: (): FakeRoute[] => skyrlRoutes(),
} as const;

/** Name of a built-in route preset. */
export type PresetName = keyof typeof PRESETS;

/** Whether `value` names a preset. */
export function isPresetName(value: unknown): value is PresetName {
  return typeof value === 'string' && Object.hasOwn(PRESETS, value);
}

/** The routes of the preset `name`. */
export function presetRoutes(name: PresetName): FakeRoute[] {
  return PRESETS[name]();
}
