/**
 * onnxruntime-node's telemetry, switched off before the library loads. On Linux its native
 * code keeps a device id and a queue of events under `$XDG_CACHE_HOME/Microsoft` (else
 * `~/.cache`) and looks up its upload host over the network, outside Deno's permissions,
 * unless `ORT_DISABLE_TELEMETRY` is set in the process environment when it starts. The project
 * never reaches the network at run time, so every path to onnxruntime-node sets it first:
 * importing this module sets it (or throws, saying which permission to grant), and
 * infer/onnx_session.ts imports it ahead of the library (modules run in import order).
 *
 * @module
 */
import { EnvPermissionError } from "./session.ts";

/** The environment variable that switches off onnxruntime's telemetry. */
export const ORT_TELEMETRY_SWITCH = "ORT_DISABLE_TELEMETRY";

/**
 * Set `ORT_DISABLE_TELEMETRY=1` in the process environment.
 *
 * @throws {EnvPermissionError} when the process may not set it, saying which permission to
 * grant.
 */
export function quietOnnxRuntime(): void {
  try {
    Deno.env.set(ORT_TELEMETRY_SWITCH, "1");
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new EnvPermissionError(
        `backend onnx: cannot set ${ORT_TELEMETRY_SWITCH}=1, which keeps onnxruntime-node ` +
          `off the network (its telemetry); grant --allow-env=${ORT_TELEMETRY_SWITCH}`,
        { cause: e },
      );
    }
    throw e;
  }
}

quietOnnxRuntime();
