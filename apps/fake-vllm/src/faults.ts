import { readFileSync } from 'node:fs';
import { FakeVllmConfigError } from './errors.js';
import { createRandom } from './tokens.js';

/** Every fault fake-vllm can inject, by the name used in `x-fake-fault` and in fault profiles. */
export const FAULT_NAMES = [
  'reset-before-response',
  'reset-mid-stream',
  'slow-stream',
  'stall',
  'truncate-stream',
  'status-429',
  'status-503',
  'status-500-text',
  'status-422',
  'malformed-chunk',
  'error-mid-stream',
  'refuse-connections',
  'idle-close-race',
  'hang-before-headers',
] as const;

/** Name of an injectable fault. */
export type FaultName = (typeof FAULT_NAMES)[number];

/** Header that triggers a fault on one request: `x-fake-fault: reset-mid-stream; after_tokens=3`. */
export const FAULT_HEADER = 'x-fake-fault';

/** How a fault parameter's value is checked: at parse time, so a bad value never reaches the engine's timer. */
type ParameterKind = 'tokens' | 'ms' | 'factor' | 'stall-action' | 'retry-after';

/** Node's longest timer: a longer delay fires after 1 ms instead (TimeoutOverflowWarning). */
const MAX_TIMER_MS = 2_147_483_647;

/** Parameters a fault accepts; unknown ones are rejected so a typo does not silently test nothing. */
const FAULT_PARAMETERS: Record<FaultName, Readonly<Record<string, ParameterKind>>> = {
  'reset-before-response': {},
  'reset-mid-stream': { after_tokens: 'tokens' },
  'slow-stream': { factor: 'factor' },
  stall: { after_tokens: 'tokens', ms: 'ms', action: 'stall-action' },
  'truncate-stream': { after_tokens: 'tokens' },
  'status-429': { retry_after: 'retry-after' },
  'status-503': { retry_after: 'retry-after' },
  'status-500-text': {},
  'status-422': {},
  'malformed-chunk': { after_tokens: 'tokens' },
  'error-mid-stream': { after_tokens: 'tokens' },
  'refuse-connections': { window_ms: 'ms' },
  'idle-close-race': { delay_ms: 'ms' },
  'hang-before-headers': { ms: 'ms' },
};

/** The actions a `stall` fault can end with. */
export const STALL_ACTIONS = ['continue', 'close', 'reset'] as const;

/** What a value of each kind must be, for messages; `undefined` when `value` is acceptable. */
function parameterProblem(kind: ParameterKind, value: string): string | undefined {
  const number = value.trim() === '' ? Number.NaN : Number(value);
  switch (kind) {
    case 'tokens':
      return Number.isInteger(number) && number >= 0 ? undefined : 'a whole number >= 0';
    case 'ms':
      return number >= 0 && number <= MAX_TIMER_MS ? undefined : `a number of milliseconds in 0..${MAX_TIMER_MS}`;
    case 'factor':
      return Number.isFinite(number) && number >= 1 ? undefined : 'a number >= 1';
    case 'stall-action':
      return (STALL_ACTIONS as readonly string[]).includes(value) ? undefined : STALL_ACTIONS.join(', ');
    case 'retry-after':
      // Any printable header value (odd ones test clients' Retry-After parsing); CR/LF would break the header.
      return /^[\x20-\x7e]*$/.test(value) ? undefined : 'a Retry-After header value (printable ASCII) or `none`';
  }
}

/** One fault chosen for one request, with its parameters. */
export interface FaultSpec {
  name: FaultName;
  params: Readonly<Record<string, string>>;
}

/** How often a fault fires when no header asks for it. */
export interface FaultRule {
  /** Probability per request (for `idle-close-race`: per idle socket and per reused socket). @default 0 */
  rate?: number;
  /** Fire on the first N requests after the profile is set, then fall back to `rate`. @default 0 */
  first?: number;
  /** Parameters as in the header form, e.g. `{ after_tokens: 5 }`. */
  params?: Record<string, string | number>;
}

/** Fault rates by name. Set by config, CLI (`--fault-profile`) or live over the control channel. */
export type FaultProfile = Partial<Record<FaultName, FaultRule | number>>;

/** Profiles with a name, usable wherever a profile is accepted. */
export const BUILTIN_FAULT_PROFILES: Readonly<Record<string, FaultProfile>> = {
  none: {},
  /** The mix real fleets produce: what the load sweep's `--faults chaos` turns on. */
  chaos: {
    'reset-before-response': 0.01,
    'reset-mid-stream': { rate: 0.005, params: { after_tokens: 2 } },
    'idle-close-race': 0.02,
    'status-503': { rate: 0.01, params: { retry_after: 0 } },
  },
  /** Only the keep-alive race: idle sockets closed at random, including the instant they are reused. */
  'idle-close-race': { 'idle-close-race': 0.2 },
};

function isFaultName(name: string): name is FaultName {
  return (FAULT_NAMES as readonly string[]).includes(name);
}

function checkParameters(name: FaultName, params: Record<string, string>, where: string): void {
  const allowed = FAULT_PARAMETERS[name];
  for (const [key, value] of Object.entries(params)) {
    const kind = Object.hasOwn(allowed, key) ? allowed[key] : undefined;
    if (kind === undefined) {
      throw new FakeVllmConfigError(
        `Unknown parameter \`${key}\` for fault \`${name}\` in ${where}; allowed: ${Object.keys(allowed).join(', ') || 'none'}`,
      );
    }
    const expected = parameterProblem(kind, value);
    if (expected !== undefined) {
      throw new FakeVllmConfigError(
        `Expected parameter \`${key}\` of fault \`${name}\` in ${where} to be ${expected}, got \`${value}\``,
      );
    }
  }
}

/** Parses the `x-fake-fault` header value (`name` or `name; key=value; key=value`). */
export function parseFaultHeader(value: string): FaultSpec {
  const [rawName = '', ...rawParams] = value.split(';').map((part) => part.trim());
  if (!isFaultName(rawName)) {
    throw new FakeVllmConfigError(
      `Expected \`${FAULT_HEADER}\` to name a fault (${FAULT_NAMES.join(', ')}), got \`${rawName}\``,
    );
  }
  const params: Record<string, string> = {};
  for (const pair of rawParams) {
    if (pair === '') continue;
    const equals = pair.indexOf('=');
    if (equals <= 0) throw new FakeVllmConfigError(`Expected \`key=value\` in \`${FAULT_HEADER}\`, got \`${pair}\``);
    params[pair.slice(0, equals).trim()] = pair.slice(equals + 1).trim();
  }
  checkParameters(rawName, params, `\`${FAULT_HEADER}\``);
  return { name: rawName, params };
}

interface NormalizedRule {
  name: FaultName;
  rate: number;
  first: number;
  params: Record<string, string>;
}

const RULE_FIELDS = ['rate', 'first', 'params'];

/** A rule is a rate or `{rate?, first?, params?}`; anything else (`"x"`, `[]`, `null`) would silently do nothing. */
function checkRule(name: FaultName, raw: unknown): FaultRule {
  if (typeof raw === 'number') return { rate: raw };
  if (!isPlainObject(raw)) {
    throw new FakeVllmConfigError(
      `Expected the rule of fault \`${name}\` to be a rate (0..1) or {rate, first, params}, got ${JSON.stringify(raw) ?? String(raw)}`,
    );
  }
  for (const key of Object.keys(raw)) {
    if (!RULE_FIELDS.includes(key)) {
      throw new FakeVllmConfigError(
        `Unknown field \`${key}\` in the rule of fault \`${name}\`; allowed: ${RULE_FIELDS.join(', ')}`,
      );
    }
  }
  const params: unknown = (raw as { params?: unknown }).params;
  if (params !== undefined && !(isPlainObject(params) && Object.values(params).every(isParameterValue))) {
    throw new FakeVllmConfigError(
      `Expected \`params\` of fault \`${name}\` to be an object of strings and numbers, got ${JSON.stringify(params)}`,
    );
  }
  return raw as FaultRule;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isParameterValue(value: unknown): boolean {
  return typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value));
}

/** Validates a profile (or resolves a built-in profile name) into the rules the injector rolls. */
export function resolveFaultProfile(profile: FaultProfile | string | undefined): NormalizedRule[] {
  if (profile === undefined) return [];
  if (typeof profile === 'string') {
    const builtin = Object.hasOwn(BUILTIN_FAULT_PROFILES, profile) ? BUILTIN_FAULT_PROFILES[profile] : undefined;
    if (!builtin) {
      throw new FakeVllmConfigError(
        `Expected a fault profile name (${Object.keys(BUILTIN_FAULT_PROFILES).join(', ')}) or an object, got \`${profile}\``,
      );
    }
    return resolveFaultProfile(builtin);
  }
  if (!isPlainObject(profile)) {
    throw new FakeVllmConfigError(
      `Expected the fault profile to be a built-in name or an object of fault rules, got ${JSON.stringify(profile) ?? String(profile)}`,
    );
  }
  const rules: NormalizedRule[] = [];
  for (const [name, raw] of Object.entries(profile)) {
    if (!isFaultName(name)) {
      throw new FakeVllmConfigError(`Unknown fault \`${name}\` in the fault profile; known: ${FAULT_NAMES.join(', ')}`);
    }
    const rule = checkRule(name, raw);
    const rate = rule.rate ?? 0;
    const first = rule.first ?? 0;
    if (typeof rate !== 'number' || !(rate >= 0 && rate <= 1)) {
      throw new FakeVllmConfigError(
        `Expected the rate of fault \`${name}\` to be within 0..1, got ${JSON.stringify(rate) ?? String(rate)}`,
      );
    }
    if (!Number.isInteger(first) || first < 0) {
      throw new FakeVllmConfigError(
        `Expected \`first\` of fault \`${name}\` to be a whole number >= 0, got ${JSON.stringify(first) ?? String(first)}`,
      );
    }
    const params = Object.fromEntries(Object.entries(rule.params ?? {}).map(([key, value]) => [key, String(value)]));
    checkParameters(name, params, `the fault profile's \`${name}\``);
    rules.push({ name, rate, first, params });
  }
  return rules;
}

/**
 * Parses a fault profile as a user writes it (`--fault-profile`, the load sweep's `--faults`): a built-in profile
 * name, a JSON object, or `@file.json`; validates it. `label` names the flag in the error.
 */
export function parseFaultProfile(value: string, label: string): FaultProfile | string {
  let profile: FaultProfile | string = value;
  try {
    if (value.startsWith('@')) profile = JSON.parse(readFileSync(value.slice(1), 'utf8')) as FaultProfile;
    else if (value.trim().startsWith('{')) profile = JSON.parse(value) as FaultProfile;
  } catch (error) {
    throw new FakeVllmConfigError(
      `Expected ${label} to be a built-in profile name, a JSON object or @file.json, got \`${value}\` (${(error as Error).message})`,
    );
  }
  try {
    resolveFaultProfile(profile);
  } catch (error) {
    throw new FakeVllmConfigError(`Invalid ${label}: ${(error as Error).message}`);
  }
  return profile;
}

/** Reads a numeric fault parameter with a default, rejecting garbage. */
export function numberParam(spec: FaultSpec, key: string, fallback: number): number {
  const raw = spec.params[key];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) {
    throw new FakeVllmConfigError(
      `Expected fault \`${spec.name}\` parameter \`${key}\` to be a number >= 0, got \`${raw}\``,
    );
  }
  return value;
}

/**
 * Decides which fault (if any) a request gets, and counts every fault actually injected.
 * The per-request header wins over the profile; profile rules are rolled in order with a seeded RNG.
 */
export class FaultInjector {
  private rules: NormalizedRule[] = [];
  private firstFired = new Map<FaultName, number>();
  private readonly random: () => number;
  /** Faults injected so far, by name. */
  readonly injected: Record<FaultName, number>;

  constructor(profile: FaultProfile | string | undefined, seed: number) {
    this.random = createRandom(seed ^ 0x5eed);
    this.injected = Object.fromEntries(FAULT_NAMES.map((name) => [name, 0])) as Record<FaultName, number>;
    this.setProfile(profile);
  }

  /** Replaces the profile (validating it first: a bad profile leaves the old one in force). */
  setProfile(profile: FaultProfile | string | undefined): void {
    this.rules = resolveFaultProfile(profile);
    this.firstFired.clear();
  }

  /** The active profile in object form. */
  profile(): FaultProfile {
    return Object.fromEntries(
      this.rules.map((rule) => [rule.name, { rate: rule.rate, first: rule.first, params: rule.params }]),
    );
  }

  /** Picks the fault for a new request from the profile (excluding socket-level `idle-close-race`). */
  rollRequest(): FaultSpec | undefined {
    for (const rule of this.rules) {
      if (rule.name === 'idle-close-race') continue;
      const fired = this.firstFired.get(rule.name) ?? 0;
      if (fired < rule.first) {
        this.firstFired.set(rule.name, fired + 1);
        return { name: rule.name, params: rule.params };
      }
      if (rule.rate > 0 && this.random() < rule.rate) return { name: rule.name, params: rule.params };
    }
    return undefined;
  }

  /** Rate of the socket-level idle-close race (0 when off). */
  idleCloseRate(): number {
    return this.rules.find((rule) => rule.name === 'idle-close-race')?.rate ?? 0;
  }

  /** A uniform draw from the injector's seeded RNG. */
  roll(): number {
    return this.random();
  }

  /** Records that a fault was injected. */
  count(name: FaultName): void {
    this.injected[name]++;
  }
}
