/**
 * Temporary directories of dead processes: the dataset's staging directory, a checkpoint's and
 * an export's temporary and set-aside directories are removed by the next run (a directory
 * whose owner still holds its lock is kept), and a checkpoint or export set aside by a
 * process killed between the two renames of the swap is restored.
 */
import { tempDir } from "./_tmp.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import {
  absolutePath,
  followLink,
  removeTreeSync,
  replaceDir,
  StagingError,
  sweepStale,
  TempLease,
} from "../base/staging.ts";
import { buildDataset } from "../pipeline/build.ts";
import { readManifest } from "../pipeline/manifest.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { exportCheckpoint, readLotusJson } from "../export/export.ts";
import { tinyCheckpoint } from "./_export_fixture.ts";
import { resolve } from "node:path";
import { fixtureTask } from "./_task.ts";

/** Process ids no live process of this test has: liveness is decided by the lock alone. */
const DEAD = 2147480001, LIVE = 2147480002;

async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

/** What a killed process leaves: `dirs` with a file in each, and its lock file, unlocked. */
async function leftover(parent: string, lock: string, ...dirs: string[]) {
  for (const d of dirs) {
    await Deno.mkdir(`${parent}/${d}`);
    await Deno.writeTextFile(`${parent}/${d}/half.bin`, "x");
  }
  await Deno.writeTextFile(`${parent}/${lock}`, "");
}

/** The same, with the lock held by an open handle, as a running process holds it. */
async function live(parent: string, lock: string, ...dirs: string[]): Promise<Deno.FsFile> {
  await leftover(parent, lock, ...dirs);
  const f = await Deno.open(`${parent}/${lock}`, { read: true, write: true });
  await f.lock(true);
  return f;
}

async function buildTask(out: string) {
  const input = `${await tempDir()}/t.jsonl`;
  await Deno.writeTextFile(input, fixtureTask(20, 1));
  await buildDataset({
    out,
    splits: [{ name: "train", inputs: [input] }],
    tokenizer: "compact",
    k: 2,
    c: 10,
  });
}

Deno.test("staging: the next build removes dead builds' staging dirs, not live ones", async () => {
  const out = `${await tempDir()}/ds`;
  await buildTask(out);
  await leftover(out, `.lock-${DEAD}`, `.staging-${DEAD}`);
  const held = await live(out, `.lock-${LIVE}`, `.staging-${LIVE}`);
  await buildTask(out);
  let left = (await names(out)).filter((n) => n.startsWith("."));
  assertEquals(left, [`.lock-${LIVE}`, `.staging-${LIVE}`]);
  held.close(); // the owner ends
  await buildTask(out);
  left = (await names(out)).filter((n) => n.startsWith("."));
  assertEquals(left, []);
  assertEquals((await readManifest(out)).splits.train.counts.read, 20);
});

Deno.test("staging: the next save removes dead saves' temporary dirs, not live ones", async () => {
  const run = await tempDir();
  const ck = `${run}/checkpoint`;
  await tinyCheckpoint(ck);
  await leftover(
    run,
    `checkpoint.lock-${DEAD}`,
    `checkpoint.tmp-${DEAD}`,
    `checkpoint.old-${DEAD}`,
  );
  const held = await live(run, `checkpoint.lock-${LIVE}`, `checkpoint.tmp-${LIVE}`);
  await tinyCheckpoint(ck, { seed: 4 });
  assertEquals(await names(run), [
    "checkpoint",
    `checkpoint.lock-${LIVE}`,
    `checkpoint.tmp-${LIVE}`,
  ]);
  held.close();
  await tinyCheckpoint(ck, { seed: 5 });
  assertEquals(await names(run), ["checkpoint"]);
});

Deno.test("staging: a checkpoint set aside by a killed swap is restored on load", async () => {
  const run = await tempDir();
  const ck = `${run}/checkpoint`;
  const { params } = await tinyCheckpoint(ck);
  // Killed between "checkpoint -> checkpoint.old-P" and "checkpoint.tmp-P -> checkpoint".
  await Deno.rename(ck, `${run}/checkpoint.old-${DEAD}`);
  await leftover(run, `checkpoint.lock-${DEAD}`, `checkpoint.tmp-${DEAD}`);
  const back = await loadCheckpoint(run);
  assertEquals(back.params.length, params.length);
  assertEquals(Array.from(back.params.subarray(0, 8)), Array.from(params.subarray(0, 8)));
  assertEquals(await names(run), ["checkpoint"]);
});

Deno.test("staging: the next export removes dead exports' temporaries and restores", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`);
  const out = `${d}/exp`;
  await exportCheckpoint(`${d}/ck`, out, { format: "hf" });
  await leftover(d, `exp.lock-${DEAD}`, `exp.tmp-${DEAD}`, `exp.old-${DEAD}`);
  const held = await live(d, `exp.lock-${LIVE}`, `exp.tmp-${LIVE}`);
  await exportCheckpoint(`${d}/ck`, out, { format: "hf" });
  assertEquals(await names(d), ["ck", "exp", `exp.lock-${LIVE}`, `exp.tmp-${LIVE}`]);
  held.close();

  // Killed between the renames: the previous export is set aside, the new one complete.
  await Deno.rename(out, `${d}/exp.old-${DEAD}`);
  await leftover(d, `exp.lock-${DEAD}`, `exp.tmp-${DEAD}`);
  await exportCheckpoint(`${d}/ck`, out, { format: "hf" });
  assertEquals(await names(d), ["ck", "exp"]);
  assert((await readLotusJson(out)).format === "lotus-export");
});

Deno.test("sweepStale: dead owners' paths go, live ones stay, the newest old returns", async () => {
  const d = await tempDir();
  await leftover(d, `t.lock-${DEAD}`, `t.tmp-${DEAD}`, `t.old-${DEAD}`);
  await leftover(d, `t.lock-${DEAD + 10}`, `t.old-${DEAD + 10}`);
  await Deno.writeTextFile(`${d}/t.old-${DEAD + 10}/newest`, "");
  const hourAgo = new Date(Date.now() - 3600_000);
  await Deno.utime(`${d}/t.old-${DEAD}`, hourAgo, hourAgo); // the other one is the newest
  await Deno.mkdir(`${d}/t.tmp-${DEAD + 20}`); // no lock file at all: dead
  await Deno.writeTextFile(`${d}/t.lock-${DEAD + 30}`, ""); // a lock file alone
  await Deno.mkdir(`${d}/u.tmp-${DEAD}`); // another target's: not this sweep's business
  const held = await live(d, `t.lock-${LIVE}`, `t.tmp-${LIVE}`);
  const r = await sweepStale(d, "t", ["tmp", "old"]);
  assertEquals(r.restored, `${d}/t.old-${DEAD + 10}`);
  assertEquals(r.kept, [`${d}/t.tmp-${LIVE}`]);
  assertEquals(await names(d), ["t", `t.lock-${LIVE}`, `t.tmp-${LIVE}`, `u.tmp-${DEAD}`]);
  assertEquals(await names(`${d}/t`), ["half.bin", "newest"]);
  held.close();
  assertEquals((await sweepStale(`${d}/missing`, "t", ["tmp"])).removed, []);
});

Deno.test("TempLease: one per target and process; release removes paths and lock", async () => {
  const d = await tempDir();
  const lease = TempLease.acquire(d, "x");
  assertThrows(() => TempLease.acquire(d, "x"), StagingError, "locked");
  await Deno.mkdir(lease.path("tmp"));
  // A sweep by this same process sees the lease as live.
  assertEquals((await sweepStale(d, "x", ["tmp"])).kept, [`${d}/x.tmp-${Deno.pid}`]);
  lease.releaseSync();
  assertEquals(await names(d), []);
  TempLease.acquire(d, "x").releaseSync();
});

Deno.test("replaceDir: a failing fill leaves the target as it was, nothing beside", async () => {
  const d = await tempDir();
  await replaceDir(`${d}/t`, (tmp) => Deno.writeTextFile(`${tmp}/v`, "1"));
  await assertRejects(
    () =>
      replaceDir(`${d}/t`, async (tmp) => {
        await Deno.writeTextFile(`${tmp}/v`, "2");
        throw new Error("disk full");
      }),
    Error,
    "disk full",
  );
  assertEquals(await Deno.readTextFile(`${d}/t/v`), "1");
  await replaceDir(`${d}/t`, (tmp) => Deno.writeTextFile(`${tmp}/w`, "3"));
  assertEquals(await names(d), ["t"]);
  assertEquals(await names(`${d}/t`), ["w"]);
});

Deno.test("replaceDir: a link is followed: the directory it points to is replaced, the link stays", async () => {
  const d = await tempDir();
  await Deno.mkdir(`${d}/disk`);
  await replaceDir(`${d}/disk/t`, (tmp) => Deno.writeTextFile(`${tmp}/v`, "1"));
  await Deno.symlink(`${d}/disk/t`, `${d}/t`);
  await replaceDir(`${d}/t/`, (tmp) => Deno.writeTextFile(`${tmp}/w`, "2"));
  assert((await Deno.lstat(`${d}/t`)).isSymlink, "the link stays a link");
  assertEquals(await names(`${d}/disk/t`), ["w"], "the directory it points to is the new one");
  assertEquals(await names(d), ["disk", "t"], "nothing is left beside the link");
  assertEquals(await names(`${d}/disk`), ["t"], "nor beside the directory");
  // A run's checkpoint kept on another disk through a link: saves go there too.
  const run = `${d}/run`, store = `${d}/disk/ck`;
  await Deno.mkdir(run);
  await Deno.mkdir(store);
  await Deno.symlink(store, `${run}/checkpoint`);
  const { params } = await tinyCheckpoint(`${run}/checkpoint`);
  assert((await Deno.lstat(`${run}/checkpoint`)).isSymlink, "a save keeps the link");
  assertEquals((await loadCheckpoint(store)).params.length, params.length);
  // A link into a directory that does not exist is refused by name, and left as it is.
  await Deno.symlink(`${d}/unmounted/gone`, `${d}/dangling`);
  await assertRejects(
    () => replaceDir(`${d}/dangling`, (tmp) => Deno.writeTextFile(`${tmp}/v`, "3")),
    StagingError,
    `${d}/dangling: is a link to ${d}/unmounted/gone, whose directory ${d}/unmounted does not exist`,
  );
  assertEquals(await followLink(`${d}/none`), `${d}/none`, "a path that does not exist is itself");
  assert((await Deno.lstat(`${d}/dangling`)).isSymlink);
  // Relative links, and links to links.
  await Deno.symlink("disk/t", `${d}/rel`);
  await Deno.symlink(`${d}/rel`, `${d}/twice`);
  assertEquals(await followLink(`${d}/twice`), `${d}/disk/t`);
});

Deno.test("staging: a save through a link, killed between its renames, is put back beside where the link points", async () => {
  const d = await tempDir();
  const run = `${d}/run`, store = `${d}/disk/ck`;
  await Deno.mkdir(run);
  await Deno.mkdir(`${d}/disk`);
  await Deno.symlink(store, `${run}/checkpoint`);
  const { params } = await tinyCheckpoint(`${run}/checkpoint`);
  // Killed between "ck -> ck.old-P" and "ck.tmp-P -> ck": the link points at nothing.
  await Deno.rename(store, `${d}/disk/ck.old-${DEAD}`);
  await leftover(`${d}/disk`, `ck.lock-${DEAD}`, `ck.tmp-${DEAD}`);
  const back = await loadCheckpoint(run);
  assertEquals(Array.from(back.params.subarray(0, 8)), Array.from(params.subarray(0, 8)));
  assertEquals(await names(`${d}/disk`), ["ck"]);
  assert((await Deno.lstat(`${run}/checkpoint`)).isSymlink);
  // The next save, rather than a load, puts it back as well before replacing it.
  await Deno.rename(store, `${d}/disk/ck.old-${DEAD}`);
  await leftover(`${d}/disk`, `ck.lock-${DEAD}`);
  let seen: string[] = [];
  await replaceDir(`${run}/checkpoint`, async (tmp) => {
    seen = await names(`${d}/disk`);
    await Deno.writeTextFile(`${tmp}/v`, "new");
  });
  assert(seen.includes("ck"), `the old checkpoint is back before the save: ${seen}`);
  assertEquals(await names(`${d}/disk`), ["ck"]);
  assertEquals(await names(store), ["v"]);
});

Deno.test("staging: a SIGKILLed process's lock is free, so its leftovers go", async () => {
  const d = await tempDir();
  const staging = new URL("../base/staging.ts", import.meta.url).href;
  const script = `${d}/hold.ts`;
  await Deno.writeTextFile(
    script,
    `import { TempLease } from "${staging}";\n` +
      `const l = TempLease.acquire(Deno.args[0], "t");\n` +
      `Deno.mkdirSync(l.path("tmp"));\n` +
      `console.log("ready");\n` +
      `setTimeout(() => {}, 60_000);\n`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", script, d],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  assert(out.includes("ready"), "the child started");
  const pid = child.pid;
  // Alive: kept.
  assertEquals((await sweepStale(d, "t", ["tmp"])).kept, [`${d}/t.tmp-${pid}`]);
  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  await child.stdout.cancel().catch(() => {});
  const r = await sweepStale(d, "t", ["tmp"]);
  assertEquals(r.kept, []);
  assertEquals(await names(d), ["hold.ts"]);
});

Deno.test("removeTreeSync: a file created while the tree is removed does not keep it", async () => {
  const dir = await tempDir();
  const t = `${dir}/.staging-1`;
  await Deno.mkdir(t);
  await Deno.writeTextFile(`${t}/a.bin`, "x");
  // What a signal handler meets: an asynchronous write still in flight creates a file after
  // the tree was emptied, so the final rmdir fails (twice here).
  let calls = 0;
  const racing = (p: string, o: Deno.RemoveOptions) => {
    if (++calls <= 2) {
      for (const e of Deno.readDirSync(p)) Deno.removeSync(`${p}/${e.name}`);
      Deno.writeTextFileSync(`${p}/late-${calls}.bin`, "x");
      Deno.removeSync(p); // not empty: throws
    }
    Deno.removeSync(p, o);
  };
  assert(removeTreeSync(t, 200, racing));
  assertEquals(calls, 3);
  assertEquals(await names(dir), []);
  // A removal that keeps failing is reported, after the given number of tries.
  await Deno.mkdir(t);
  calls = 0;
  const failing = (p: string) => {
    calls++;
    Deno.writeTextFileSync(`${p}/late.bin`, "x");
    Deno.removeSync(p);
  };
  assert(!removeTreeSync(t, 5, failing));
  assertEquals(calls, 5);
  assert(removeTreeSync(t));
  // A path that does not exist is gone already.
  assert(removeTreeSync(`${dir}/none`));
  assertEquals(await names(dir), []);
});

Deno.test("absolutePath: against the working directory, '.' and '..' folded as node:path's resolve", () => {
  const cwd = Deno.cwd();
  for (
    const p of ["ex/.", "ex/sub/..", "ex/./", ".", "..", "/a/b/../c/.", "/..", "a//b/", "/"]
  ) {
    assertEquals(absolutePath(p), resolve(p), p);
  }
  assertEquals(absolutePath("x/.."), cwd);
});
