/**
 * Latent readout: the post-loop logits of the loop region read through the LM head. Block k
 * owns loop rows k*c .. k*c+c-1 (row 0 is BOT: the reference's BOT offset), so its slots are
 * scored against the gold step S_k position by position (docs/method.md).
 *
 * @module
 */

/** Indices of the `k` largest values of `row` (descending; lowest index on ties). */
export function topK(row: Float32Array, k: number): number[] {
  const best: number[] = [];
  for (let v = 0; v < row.length; v++) {
    if (best.length < k) {
      best.push(v);
      best.sort((a, b) => row[b] - row[a] || a - b);
    } else if (row[v] > row[best[k - 1]]) {
      best[k - 1] = v;
      best.sort((a, b) => row[b] - row[a] || a - b);
    }
  }
  return best;
}

/**
 * The argmax token of every slot of every block: `[K][c]` ids, from `[1 + K*c, V]` logits.
 *
 * @example
 * ```ts
 * import { readoutIds } from "./readout.ts";
 * const V = 3, logits = new Float32Array([0, 1, 0, 2, 0, 0, 0, 0, 5]); // 3 rows: BOT + 2 slots
 * console.assert(JSON.stringify(readoutIds(logits, 1, 2, V)) === "[[1,0]]");
 * ```
 */
export function readoutIds(logits: Float32Array, K: number, c: number, V: number): number[][] {
  const out: number[][] = [];
  for (let k = 0; k < K; k++) {
    const ids: number[] = [];
    for (let j = 0; j < c; j++) {
      const row = logits.subarray((k * c + j) * V, (k * c + j + 1) * V);
      let best = 0;
      for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
      ids.push(best);
    }
    out.push(ids);
  }
  return out;
}

/**
 * Each block's readout as text: the argmax slots decoded, cut at the first newline (a step
 * ends with "\n", so the slots after it belong to no step).
 */
export function readoutTexts(
  logits: Float32Array,
  K: number,
  c: number,
  V: number,
  decode: (ids: number[]) => string,
): string[] {
  return readoutIds(logits, K, c, V).map((ids) => {
    const text = decode(ids);
    const nl = text.indexOf("\n");
    return nl >= 0 ? text.slice(0, nl) : text;
  });
}
