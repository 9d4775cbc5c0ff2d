import { createRandom } from 'fake-vllm';
import { expect, it } from 'vitest';
import { interArrivalMs } from '../src/arrivals.js';

it('inter-arrival times have mean 1000/rate; Poisson has CV 1, gamma with shape 0.5 is burstier', () => {
  const stats = (kind: 'constant' | 'poisson' | 'gamma') => {
    const random = createRandom(7);
    const samples = Array.from({ length: 50_000 }, () => interArrivalMs(kind, 100, 0.5, random));
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    const sd = Math.sqrt(samples.reduce((a, b) => a + (b - mean) ** 2, 0) / samples.length);
    return { mean, cv: sd / mean };
  };
  expect(stats('constant')).toEqual({ mean: 10, cv: 0 });
  const poisson = stats('poisson');
  expect(poisson.mean).toBeGreaterThan(9.8);
  expect(poisson.mean).toBeLessThan(10.2);
  expect(poisson.cv).toBeGreaterThan(0.97);
  expect(poisson.cv).toBeLessThan(1.03);
  const gamma = stats('gamma');
  expect(gamma.mean).toBeGreaterThan(9.7);
  expect(gamma.mean).toBeLessThan(10.3);
  expect(gamma.cv).toBeGreaterThan(1.35); // sqrt(1 / 0.5) = 1.41
});
