// node_modules/.bin/deno (tools/deno_shim.cjs) passes a signal on to Deno and exits only when
// Deno has, with its status: a run stopped by Ctrl-C or `kill` has saved before the shell, or
// a script waiting on the shim, goes on.
import { assertEquals } from "./_assert.ts";
import { ROOT } from "./_run.ts";
import { tempDir } from "./_tmp.ts";

Deno.test("deno shim: SIGINT reaches Deno, and the shim waits for its save and its status", async () => {
  const dir = await tempDir();
  // A program that, on SIGINT, takes a while to save, then exits 130 as the trainer does.
  await Deno.writeTextFile(
    `${dir}/slow_stop.ts`,
    `Deno.addSignalListener("SIGINT", async () => {
       await new Promise((r) => setTimeout(r, 500));
       Deno.writeTextFileSync(${JSON.stringify(`${dir}/saved`)}, "yes");
       Deno.exit(130);
     });
     console.log("ready");
     await new Promise((r) => setTimeout(r, 60_000));`,
  );
  const child = new Deno.Command(`${ROOT}node_modules/.bin/deno`, {
    args: ["run", `--allow-write=${dir}`, `${dir}/slow_stop.ts`],
    stdout: "piped",
    stderr: "inherit",
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
  }
  // The shim alone is signalled, as `kill PID` or a supervisor would do it.
  child.kill("SIGINT");
  const status = await child.status;
  reader.releaseLock();
  await child.stdout.cancel().catch(() => {});
  assertEquals(status.code, 130);
  assertEquals(await Deno.readTextFile(`${dir}/saved`), "yes", "saved before the shim exited");
});
