import type { IncomingHttpHeaders } from 'node:http';

/**
 * The durations of a `Server-Timing` header or trailer (W3C Server Timing: `name;dur=12.5;desc="..."`, metrics
 * separated by commas), by metric name, in milliseconds. Metrics without a finite `dur` are left out; a missing or
 * malformed value gives an empty record.
 */
export function parseServerTiming(value: IncomingHttpHeaders[string]): Record<string, number | undefined> {
  const durations: Record<string, number | undefined> = {};
  const text = Array.isArray(value) ? value.join(',') : value;
  if (!text) return durations;
  for (const metric of text.split(',')) {
    const [name, ...params] = metric.split(';');
    const key = name?.trim();
    if (!key) continue;
    for (const param of params) {
      const [paramName, raw] = param.split('=');
      if (paramName?.trim().toLowerCase() !== 'dur' || raw === undefined) continue;
      const duration = Number(raw.trim().replace(/^"|"$/g, ''));
      if (Number.isFinite(duration)) durations[key] = duration;
    }
  }
  return durations;
}
