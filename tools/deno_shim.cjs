#!/usr/bin/env node
// node_modules/.bin/deno (tools/postinstall.cjs links it here): starts the native Deno that the
// deno package installed, with the same arguments, and waits for it. Unlike a synchronous
// spawn, it forwards SIGINT, SIGTERM and SIGHUP to Deno and exits only when Deno has: a
// training run stopped with Ctrl-C or `kill` saves its checkpoint and cleans up before the
// shell (or a script waiting on this process) goes on. Its exit status is Deno's, or 128 plus
// the signal's number when Deno was ended by one.
"use strict";
const childProcess = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const pkg = path.dirname(require.resolve("deno/package.json"));
let exe = path.join(pkg, os.platform() === "win32" ? "deno.exe" : "deno");
if (!fs.existsSync(exe)) exe = require(path.join(pkg, "install_api.cjs")).runInstall();

const child = childProcess.spawn(exe, process.argv.slice(2), { stdio: "inherit" });
const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"];
for (const sig of SIGNALS) {
  process.on(sig, () => {
    // Deno may have had it already (a terminal signals the whole process group); once more
    // does no harm, since Deno's handlers stop the run at the end of the current step.
    try {
      child.kill(sig);
    } catch { /* already gone */ }
  });
}
child.on("error", (e) => {
  console.error(`deno: cannot start ${exe}: ${e.message}`);
  process.exit(1);
});
child.on("exit", (code, signal) => {
  process.exit(code ?? 128 + (os.constants.signals[signal] ?? 0));
});
