import { describe, expect, it } from 'vitest';
import { parseServerTiming } from './server-timing.js';

describe('parseServerTiming', () => {
  it('reads the durations of each metric', () => {
    expect(parseServerTiming('queue;dur=12.5, ttft;dur=480, e2e;dur=1500.25')).toEqual({
      queue: 12.5,
      ttft: 480,
      e2e: 1500.25,
    });
  });

  it('accepts descriptions, quoted durations, repeated headers and odd spacing', () => {
    expect(parseServerTiming(['cache;desc="hit";dur="2"', ' db ; dur = 53 '])).toEqual({ cache: 2, db: 53 });
  });

  it('leaves out metrics without a finite duration and survives garbage', () => {
    expect(parseServerTiming('miss, total;dur=abc, ;dur=3, ok;dur=1')).toEqual({ ok: 1 });
    expect(parseServerTiming(undefined)).toEqual({});
    expect(parseServerTiming('')).toEqual({});
  });
});
