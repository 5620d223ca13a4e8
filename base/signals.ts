/**
 * The stop signals (SIGINT, SIGTERM, SIGHUP) as the long-running commands take them: a listener
 * keeps the first one seen, and the work looks at it between its steps (training after a step, an
 * evaluation after a batch), so that it stops cleanly rather than at once.
 *
 * @example
 * ```ts
 * import { signalTurns, watchStopSignals } from "./signals.ts";
 * const stop = watchStopSignals();
 * try {
 *   for (let step = 0; step < 3; step++) {
 *     await signalTurns();
 *     if (stop.signal) break;
 *   }
 * } finally {
 *   stop.close();
 * }
 * ```
 *
 * @module
 */

/**
 * The signals that stop a run cleanly: the current step ends, then the run stops. SIGHUP (the
 * terminal closed) is one of them, so that a run started in a terminal that goes away saves as
 * it would on Ctrl-C; what it prints after that goes nowhere, and is not an error.
 */
export const STOP_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/**
 * Stop signals seen while it listens (without a listener, a signal ends the process at once).
 */
export interface StopWatch {
  /** The first signal seen, or null. */
  readonly signal: Deno.Signal | null;
  /** Stop listening. */
  close(): void;
}

/**
 * Listen for {@linkcode STOP_SIGNALS} until `close`, keeping the first one seen; `onStop`, if
 * given, is called with each one as it comes (an `AbortController`'s `abort` at the first, say,
 * and an exit at the next). `abort`, if given, stops as SIGTERM does when it is aborted (or was
 * already): a caller's way to stop the work without a signal to the process.
 */
export function watchStopSignals(
  onStop?: (signal: Deno.Signal) => void,
  abort?: AbortSignal,
): StopWatch {
  const listeners = new Map<Deno.Signal, () => void>();
  let signal: Deno.Signal | null = null;
  const onAbort = () => {
    signal ??= "SIGTERM";
    onStop?.("SIGTERM");
  };
  if (abort?.aborted) signal = "SIGTERM";
  else abort?.addEventListener("abort", onAbort, { once: true });
  for (const sig of STOP_SIGNALS) {
    const onSignal = () => {
      signal ??= sig;
      onStop?.(sig);
    };
    try {
      Deno.addSignalListener(sig, onSignal);
      listeners.set(sig, onSignal);
    } catch { /* signals unsupported */ }
  }
  return {
    get signal() {
      return signal;
    },
    close() {
      abort?.removeEventListener("abort", onAbort);
      for (const [sig, h] of listeners) {
        try {
          Deno.removeSignalListener(sig, h);
        } catch { /* signals unsupported */ }
      }
      listeners.clear();
    },
  };
}

/**
 * Two turns of the event loop: a signal that has come reaches its listener. One is not
 * enough: a turn runs its expired timers before the operations that completed (a signal's),
 * so after a step long enough to expire a timer, the first turn resumes the run before the
 * listener has run.
 */
export async function signalTurns(): Promise<void> {
  for (let turn = 0; turn < 2; turn++) await new Promise((r) => setTimeout(r, 0));
}

/**
 * Runs `write` (a line to stdout or stderr), dropping the error it throws: once SIGHUP has come
 * (its terminal closed), a write to the terminal fails with an I/O error, and what a stopping
 * command prints must not keep it from saving, or from exiting with its signal's status.
 *
 * @example
 * ```ts
 * import { unlessGone } from "./signals.ts";
 * unlessGone(() => {
 *   throw new Error("Input/output error (os error 5)");
 * }); // nothing thrown
 * ```
 */
export function unlessGone(write: () => void): void {
  try {
    write();
  } catch {
    // The terminal is gone: what was said goes nowhere.
  }
}

/** The exit status of a command a stop signal ended: 130 for SIGINT, 143 for SIGTERM, 129 for
 * SIGHUP (128 and the signal's number, as a shell gives). */
export function signalExitCode(signal: Deno.Signal): number {
  return signal === "SIGINT" ? 130 : signal === "SIGHUP" ? 129 : 143;
}
