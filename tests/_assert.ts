/**
 * Test assertions with @std/assert's names, on Node's `node:assert/strict` (the project
 * takes nothing from JSR; README, "Substitutes for JSR packages").
 *
 * @module
 */
import assert from "node:assert/strict";

/**
 * Deep strict equality. Two typed arrays of one kind are compared bit for bit, and a failure
 * names the first element that differs (a diff of millions of elements would not fit in
 * memory).
 */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  if (
    ArrayBuffer.isView(actual) && ArrayBuffer.isView(expected) &&
    !(actual instanceof DataView) && actual.constructor === expected.constructor
  ) {
    const a = actual as unknown as ArrayLike<unknown> & ArrayBufferView;
    const e = expected as unknown as ArrayLike<unknown> & ArrayBufferView;
    const bytes = (v: ArrayBufferView) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    const ab = bytes(a), eb = bytes(e);
    let i = a.length === e.length ? ab.findIndex((x, k) => x !== eb[k]) : -2;
    if (i === -1) return;
    const what = msg ? `${msg}: ` : "";
    if (i === -2) {
      throw new assert.AssertionError({
        message: `${what}${a.length} elements, expected ${e.length}`,
      });
    }
    i = Math.floor(i / (a.byteLength / a.length));
    const show = (v: unknown) => Object.is(v, -0) ? "-0" : String(v);
    throw new assert.AssertionError({
      message: `${what}element ${i} of ${a.length} is ${show(a[i])}, expected ${show(e[i])}`,
    });
  }
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
