/**
 * The evaluation a run makes of its validation split: mean answer loss, teacher-forced at the
 * stage's K and R, and greedy exact-match accuracy, a batch at a time (`deno task eval`, with
 * its report, is eval/).
 *
 * @module
 */

import type { TrainConfig } from "../model/config.ts";
import { type Example, lotusBatch, plainBatch } from "./batch.ts";
import type { SpecialIds } from "../pipeline/tokenizer.ts";
import type { Model } from "../model/model.ts";
import { LotusRunner, PlainRunner, type StepLosses } from "./step.ts";
import { Generator } from "../model/generate.ts";
import { answersMatch, extractAnswer } from "../pipeline/answer.ts";
import type { Tokenizer } from "../pipeline/tokenizer.ts";
import { capacityOf } from "./batch.ts";

/** What {@linkcode evaluating} adds up: summed answer loss, its tokens, correct answers. */
export interface EvalSums {
  lossSum: number;
  lossN: number;
  correct: number;
  /** The examples evaluated. */
  n: number;
}

/**
 * The validation evaluation's sums (mean answer loss, teacher-forced at the stage's K and R, and
 * greedy exact-match accuracy), a batch at a time: it yields the sums so far after each batch, so
 * that its caller can look for a stop signal between two. Ended early (a `break` out of its loop),
 * it frees what it allocated.
 */
export function* evaluating(
  model: Model,
  exs: Example[],
  sp: SpecialIds,
  tok: Tokenizer,
  cfg: TrainConfig,
  K: number,
  R: number,
  batch: number,
): IterableIterator<EvalSums> {
  const cap = capacityOf(exs, cfg, batch);
  let lossSum = 0, lossN = 0, correct = 0;
  // No answer runs past the model's context (its position table): one that would is cut
  // where the context ends, so a --max-new-tokens above it needs no room beyond it either.
  const maxPos = model.cfg.maxPositions;
  const plain = cfg.mode === "cot" || cfg.mode === "nocot";
  let gen: Generator | null = null;
  let lotusRun: LotusRunner | null = null, plainRun: PlainRunner | null = null;
  try {
    // Made inside: one that cannot be allocated frees those made before it.
    gen = new Generator(model, {
      B: batch,
      P: cap.P,
      K,
      c: cfg.c,
      maxNewTokens: Math.min(cfg.maxNewTokens, maxPos),
    });
    lotusRun = plain ? null : new LotusRunner(model, { ...cap, K: Math.max(K, 0), R }, false);
    plainRun = plain ? new PlainRunner(model, batch, cap.T, false) : null;
    for (let i = 0; i < exs.length; i += batch) {
      const part = exs.slice(i, i + batch);
      const l: StepLosses = plain
        ? plainRun!.step(plainBatch(part, sp, cfg.mode === "cot"))
        : lotusRun!.step(lotusBatch(part, sp, { K, R, c: cfg.c }), {
          lambda: 0,
          auxWeight: 0,
          stepLoss: cfg.stepLoss,
          injection: cfg.injection,
          auxReads: cfg.auxReads,
        }, part);
      lossSum += l.ans * l.nAns, lossN += l.nAns;
      // The last new token's position is the longest question's length, the latents and the
      // budget, less one: it stays below maxPos (batch.ts's fitting() left room for one token
      // at least).
      const P = Math.max(...part.map((e) => e.q.length)), L = plain ? 0 : 1 + K * cfg.c;
      const g = gen.generate(part.map((e) => e.q), sp, {
        mode: plain ? cfg.mode as "cot" | "nocot" : "lotus",
        K,
        c: cfg.c,
        R,
        injection: cfg.injection,
        maxNewTokens: Math.max(1, Math.min(cfg.maxNewTokens, maxPos - P - L)),
      });
      for (let j = 0; j < part.length; j++) {
        const gold = extractAnswer(tok.decode(part[j].ans.subarray(0, part[j].ans.length - 1)));
        if (answersMatch(extractAnswer(tok.decode(g.tokens[j])), gold)) correct++;
      }
      yield { lossSum, lossN, correct, n: i + part.length };
    }
  } finally {
    gen?.free();
    lotusRun?.free();
    plainRun?.free();
  }
}
