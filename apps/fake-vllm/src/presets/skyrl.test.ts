import { describe, expect, it } from 'vitest';
import { packRoutedExperts, skyrlRoutes } from './skyrl.js';

/** Reads a packed array back as SkyRL's `decode_packed_routed_experts` does (little-endian, C order). */
function unpack({ data, shape, dtype }: ReturnType<typeof packRoutedExperts>): number[] {
  const bytes = Buffer.from(data, 'base64');
  const size = { uint8: 1, int16: 2, int32: 4 }[dtype];
  expect(bytes.length).toBe(shape[0] * shape[1] * shape[2] * size);
  const values: number[] = [];
  for (let offset = 0; offset < bytes.length; offset += size) {
    values.push(
      size === 1 ? bytes.readUInt8(offset) : size === 2 ? bytes.readInt16LE(offset) : bytes.readInt32LE(offset),
    );
  }
  return values;
}

describe('packRoutedExperts', () => {
  it('packs [tokens, layers, topK] distinct expert ids, the same for the same token', () => {
    const packed = packRoutedExperts([7, 8, 7], { layers: 3, topK: 2, experts: 8 });
    expect(packed.shape).toEqual([3, 3, 2]);
    expect(packed.dtype).toBe('uint8');
    const values = unpack(packed);
    const row = (token: number) => values.slice(token * 6, token * 6 + 6);
    expect(row(0)).toEqual(row(2));
    for (let pair = 0; pair < values.length; pair += 2) {
      expect(values[pair]).not.toBe(values[pair + 1]);
      expect(values[pair]!).toBeLessThan(8);
    }
  });

  it('uses the smallest dtype that holds the largest id, as SkyRL requires', () => {
    const tokens = Array.from({ length: 64 }, (_, index) => index);
    for (const [experts, dtypes] of [
      [256, ['uint8']],
      [1000, ['int16']],
      [100_000, ['int32']],
    ] as const) {
      const packed = packRoutedExperts(tokens, { layers: 4, topK: 2, experts });
      const largest = Math.max(...unpack(packed));
      expect(dtypes).toContain(packed.dtype);
      expect(largest).toBeLessThan(experts);
      expect(packed.dtype).toBe(largest < 256 ? 'uint8' : largest < 32768 ? 'int16' : 'int32');
    }
  });

  it('packs no rows for no tokens', () => {
    expect(packRoutedExperts([], { layers: 2, topK: 1, experts: 4 })).toEqual({
      data: '',
      shape: [0, 2, 1],
      dtype: 'uint8',
    });
  });
});

describe('skyrlRoutes options', () => {
  it('rejects a topK larger than the number of experts, naming the field', () => {
    expect(() => skyrlRoutes({ routedExperts: { topK: 9, experts: 8 } })).toThrow(/`routedExperts.topK`.*1\.\.8/);
  });
});
