/**
 * Test assertions with @std/assert's names, on Node's `node:assert/strict` (the project
 * takes nothing from JSR; README, "Substitutes for JSR packages").
 *
 * @module
 */
import assert from "node:assert/strict";

/** Deep strict equality. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  assert.deepStrictEqual(actual, expected, msg);
}

/** Truthiness. */
export function assert_(cond: unknown, msg?: string): asserts cond {
  assert.ok(cond, msg);
}
export { assert_ as assert };

/** |a - b| <= tol. */
export function assertAlmostEquals(actual: number, expected: number, tol = 1e-7, msg?: string) {
  if (!(Math.abs(actual - expected) <= tol)) {
    throw new assert.AssertionError({
      message: msg ?? `expected ${actual} to be within ${tol} of ${expected}`,
      actual,
      expected,
    });
  }
}

/** The function throws an instance of `cls` whose message contains `includes`. */
export function assertThrows(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  cls?: new (...args: any[]) => Error,
  includes?: string,
): Error {
  try {
    fn();
  } catch (e) {
    if (cls && !(e instanceof cls)) throw new Error(`expected ${cls.name}, got ${e}`);
    if (includes && !(e as Error).message.includes(includes)) {
      throw new Error(`expected message to include "${includes}", got "${(e as Error).message}"`);
    }
    return e as Error;
  }
  throw new Error("expected the function to throw");
}

/** The promise rejects with an instance of `cls` whose message contains `includes`. */
export async function assertRejects<E extends Error = Error>(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  cls?: new (...args: any[]) => E,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    if (cls && !(e instanceof cls)) throw new Error(`expected ${cls.name}, got ${e}`);
    if (includes && !(e as Error).message.includes(includes)) {
      throw new Error(`expected message to include "${includes}", got "${(e as Error).message}"`);
    }
    return e as E;
  }
  throw new Error("expected the promise to reject");
}
