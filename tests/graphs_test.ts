import { assertEquals } from "./_assert.ts";
import { GraphCache } from "../model/graphs.ts";
import { type Engine, EngineError } from "../engine/ffi.ts";

/** An engine with `slots` graph slots that counts what runs op by op, records and replays. */
function fakeEngine(slots: number) {
  const free = Array.from({ length: slots }, (_, i) => i);
  const n = { eager: 0, recorded: 0, replayed: 0 };
  let recording = false;
  const eng = {
    graphSlot: () => {
      const s = free.pop();
      if (s === undefined) throw new EngineError("le_graph_slot", "every slot is in use");
      return s;
    },
    graphFree: (s: number) => void free.push(s),
    graphBegin: () => void (recording = true),
    graphEnd: () => void (recording = false),
    graphLaunch: () => (n.replayed++, true),
  } as unknown as Engine;
  const ops = () => void (recording ? n.recorded++ : n.eager++);
  return { eng, n, ops };
}

Deno.test("graphs: a full cache keeps its graph against keys run no more often", () => {
  const { eng, n, ops } = fakeEngine(8);
  const g = new GraphCache(eng, 1);
  // Two keys in turn, one slot: A is recorded and replayed; B, never run more often than A,
  // runs op by op. (Replacing the graph at every call would record at every call.)
  for (let i = 0; i < 10; i++) g.run(i % 2 ? "B" : "A", ops);
  assertEquals(n, { eager: 5, recorded: 1, replayed: 5 });
  // B comes alone from now on (a new curriculum stage): once it has run more often than A
  // it takes the slot.
  for (let i = 0; i < 3; i++) g.run("B", ops);
  assertEquals(n.recorded, 2, "B recorded once it ran more often than A");
  assertEquals(g.size, 1);
});

Deno.test("graphs: counts age, so that a key that stopped coming gives way", () => {
  const { eng, n, ops } = fakeEngine(8);
  const g = new GraphCache(eng, 1);
  for (let i = 0; i < 60; i++) g.run("A", ops); // A ran 60 times
  // Every 64 runs the counts halve: B, run alone, overtakes A after about 30 runs, not 60.
  let at = 0;
  for (let i = 1; i <= 60 && !at; i++) {
    g.run("B", ops);
    if (n.recorded === 2) at = i;
  }
  assertEquals(at > 0 && at < 40, true, `B recorded after ${at} runs`);
});

Deno.test("graphs: seen() tells a key's second call; clear() frees every slot", () => {
  const { eng, ops } = fakeEngine(2);
  const g = new GraphCache(eng, 4);
  assertEquals([g.seen("x"), g.seen("x"), g.seen("y")], [false, true, false]);
  g.run("x", ops), g.run("y", ops);
  assertEquals(g.size, 2);
  g.run("z", ops); // the engine's two slots are held: z runs op by op
  assertEquals(g.size, 2);
  g.clear();
  assertEquals(g.size, 0);
  g.run("z", ops);
  assertEquals(g.size, 1, "a slot is free again");
});
