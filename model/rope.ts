/**
 * Rotary position embeddings' frequencies: inv_freq[i] = theta^(-2i / HS) for i < HS/2, with
 * Llama 3's frequency scaling when the config has one. The engines rotate by
 * pos * inv_freq[i]; this table is all they need.
 *
 * Llama 3's scaling, with wavelength w = 2 pi / f and L = originalMaxPositions: frequencies
 * whose wavelength exceeds L / lowFreqFactor are divided by `factor`, those below
 * L / highFreqFactor are kept, and those between are blended linearly in L / w:
 * s = (L / w - lowFreqFactor) / (highFreqFactor - lowFreqFactor), f' = (1 - s) f / factor + s f.
 *
 * @module
 */

import type { RopeScaling } from "./config.ts";

/**
 * The rotary frequency table of a head size (fp32, HS/2 entries).
 *
 * @example
 * ```ts
 * import { ropeInvFreq } from "./rope.ts";
 * const f = ropeInvFreq(4, 10000, null);
 * console.assert(f[0] === 1 && Math.abs(f[1] - 0.01) < 1e-9);
 * ```
 */
export function ropeInvFreq(
  headSize: number,
  theta: number,
  scaling: RopeScaling | null,
): Float32Array {
  if (headSize % 2 !== 0) throw new Error(`rotary head size ${headSize} must be even`);
  const half = headSize / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const f = 1 / Math.pow(theta, (2 * i) / headSize);
    out[i] = scaling ? scaleFrequency(f, scaling) : f;
  }
  return out;
}

function scaleFrequency(f: number, s: RopeScaling): number {
  const L = s.originalMaxPositions;
  const wavelen = (2 * Math.PI) / f;
  const lowWavelen = L / s.lowFreqFactor, highWavelen = L / s.highFreqFactor;
  if (wavelen < highWavelen) return f;
  if (wavelen > lowWavelen) return f / s.factor;
  const smooth = (L / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
  return (1 - smooth) * (f / s.factor) + smooth * f;
}
