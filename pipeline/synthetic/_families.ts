/**
 * The template families of the synthetic generator. Each family tells one kind of story; its
 * openers compute a first quantity from numbers they draw, and its moves compute the next
 * quantity from the current one, so every step depends on the step before it (and some, such
 * as "over the two days" or "together", on an earlier one too). A move returns null when its
 * numbers cannot be drawn within the record's limits (no exact divisor, a value over the cap),
 * and the generator tries another.
 *
 * @module
 */
import {
  art,
  cap,
  type Ctx,
  divisors,
  draw,
  type FamilyBuilder,
  fits,
  fitsMoney,
  fractionOf,
  fractionWords,
  fresh,
  money,
  type Move,
  numerator,
  type Out,
  type State,
  step,
  wide,
} from "./_kit.ts";
import {
  BAKES,
  CONTAINERS,
  DAYS,
  DISTANCE_UNITS,
  INGREDIENTS,
  JOBS,
  KITCHEN_TOOLS,
  PRACTICE,
  PURCHASES,
  RELATIVES,
  SHOP_ITEMS,
  THINGS,
  TRACK_LENGTHS,
  TRAVEL_MODES,
} from "./_words.ts";

const BILLS = [5, 10, 20, 50, 100, 200, 500, 1000];
const LATER = ["After a break", "After lunch", "In the evening", "Later", "Before dinner"];
const LOSE = ["loses", "gives away", "trades away", "misplaces"];
const EXTRA_USE = ["the topping", "the filling", "a test batch", "the glaze", "a second tray"];
const EXTRA_PAY: ((b: number) => string)[] = [
  (b) => `a $${b} bonus`,
  (b) => `$${b} in tips`,
  (b) => `a $${b} gift from a neighbor`,
  (b) => `$${b} for extra work`,
];

/** A price in cents from a range in dollars; with cents allowed, sometimes .25, .50 or .75. */
function price(c: Ctx, lo: number, hi: number): number {
  const dollars = wide(c, lo, hi);
  const cents = c.cents && c.rng.chance(0.35) ? c.rng.pick([25, 50, 75]) : 0;
  return dollars * 100 + cents;
}

/** The percentages p for which p% of v is a whole, positive number (of cents, for money). */
function exactPercents(v: number, choices: number[]): number[] {
  return choices.filter((p) => Number.isInteger(v * p / 100) && v * p > 0);
}

/** A move that pays with a bill and asks for the change; only as the last step. */
function change(c: Ctx, s: State): Out | null {
  const bills = BILLS.filter((b) => b * 100 > s.v && fits(c, b));
  if (bills.length === 0) return null;
  const bill = c.rng.pick(bills.slice(0, 2));
  const r = bill * 100 - s.v;
  const { who } = c;
  return {
    clause: `${cap(who.he)} pays with ${art(`$${bill}`)} bill.`,
    lines: [step(`${cap(who.his)} change is `, `${bill}-${money(s.v)}`, money(r), ".", true)],
    state: { v: r, kind: "change", money: true, ask: `How much change does ${who.name} get?` },
    final: true,
  };
}

/** A move that splits a cost equally; only as the last step. */
function split(c: Ctx, s: State): Out | null {
  const ks = [2, 3, 4, 5, 6].filter((k) => s.v % k === 0 && fitsMoney(c, s.v / k));
  if (ks.length === 0) return null;
  const k = c.rng.pick(ks);
  const r = s.v / k;
  const others = k === 2 ? "a friend" : `${k - 1} friends`;
  return {
    clause: `${c.who.name} and ${others} split the cost equally.`,
    lines: [step("Each person pays ", `${money(s.v)}/${k}`, money(r), ".", true)],
    state: { v: r, kind: "share", money: true, ask: "How much does each person pay?" },
    final: true,
  };
}

/** Shopping: prices, quantities, discounts, tax, coupons, change; money with cents. */
const shopping: FamilyBuilder = (c) => {
  const { who, rng } = c;
  const item = rng.pick(SHOP_ITEMS);
  const rest = SHOP_ITEMS.filter((i) => i !== item);
  const he = who.he;
  const spent = (v: number, ask: string): State => ({ v, kind: "spent", money: true, ask });
  const moves: Move[] = [
    (s) => {
      if (s.kind !== "spent") return null;
      const another = fresh(c, "item", rest);
      const q = price(c, another[2], another[3]);
      const v = s.v + q;
      if (!fitsMoney(c, v)) return null;
      return {
        clause: `${cap(he)} also buys ${art(another[0])} for $${money(q)}.`,
        lines: [step(`In all ${he} spends `, `${money(s.v)}+${money(q)}`, money(v), ".", true)],
        state: spent(v, `How much does ${who.name} spend in all?`),
      };
    },
    (s) => {
      if (s.kind !== "spent") return null;
      const another = fresh(c, "item", rest);
      const k = draw(c, 2, 8);
      const q = price(c, another[2], another[3]);
      const cost = k * q;
      const v = s.v + cost;
      if (!fitsMoney(c, cost) || !fitsMoney(c, v)) return null;
      return {
        clause: `${cap(he)} also buys ${k} ${another[1]} at $${money(q)} each.`,
        lines: [
          step(`The ${another[1]} cost `, `${k}*${money(q)}`, money(cost), ".", true),
          step("Altogether that is ", `${money(s.v)}+${money(cost)}`, money(v), ".", true),
        ],
        state: spent(v, `How much does ${who.name} spend altogether?`),
      };
    },
    (s) => {
      if (s.kind !== "spent") return null;
      const pcts = exactPercents(s.v, [10, 15, 20, 25, 30, 50]);
      if (pcts.length === 0) return null;
      const p = rng.pick(pcts);
      const d = s.v * p / 100;
      const v = s.v - d;
      if (!fitsMoney(c, d) || !fitsMoney(c, v)) return null;
      return {
        clause: rng.pick([
          `The shop takes ${p}% off the total.`,
          `Everything is on sale at ${p}% off.`,
        ]),
        lines: [
          step("The discount is ", `${money(s.v)}*${p}/100`, money(d), ".", true),
          step(`So ${he} pays `, `${money(s.v)}-${money(d)}`, money(v), ".", true),
        ],
        state: spent(v, `How much does ${who.name} pay after the discount?`),
        tag: "discount",
      };
    },
    (s) => {
      if (s.kind !== "spent" || s.v < 300) return null;
      const k = draw(c, 1, Math.min(20, Math.floor(s.v / 200)));
      const v = s.v - k * 100;
      return {
        clause: `${cap(he)} has a coupon for $${k} off.`,
        lines: [step(`With the coupon ${he} pays `, `${money(s.v)}-${k}`, money(v), ".", true)],
        state: spent(v, `How much does ${who.name} pay with the coupon?`),
        tag: "coupon",
      };
    },
    (s) => {
      if (s.kind !== "spent") return null;
      const pcts = exactPercents(s.v, [4, 5, 6, 8, 10]);
      if (pcts.length === 0) return null;
      const p = rng.pick(pcts);
      const t = s.v * p / 100;
      const v = s.v + t;
      if (!fitsMoney(c, t) || !fitsMoney(c, v)) return null;
      return {
        clause: `Sales tax is ${p}%.`,
        lines: [
          step("The tax is ", `${money(s.v)}*${p}/100`, money(t), ".", true),
          step("The total is ", `${money(s.v)}+${money(t)}`, money(v), ".", true),
        ],
        state: spent(v, `How much does ${who.name} pay in total, with tax?`),
        tag: "tax",
      };
    },
    (s) => {
      if (s.kind !== "spent") return null;
      const v = s.v * 2;
      if (!fitsMoney(c, v)) return null;
      const rel = fresh(c, "rel", RELATIVES);
      return {
        clause: `${cap(he)} buys the same again for ${who.his} ${rel}.`,
        lines: [step(`For both of them ${he} spends `, `${money(s.v)}*2`, money(v), ".", true)],
        state: spent(v, `How much does ${who.name} spend for both of them?`),
        tag: "double",
      };
    },
    (s) => s.kind === "spent" ? change(c, s) : null,
    (s) => s.kind === "spent" ? split(c, s) : null,
  ];
  const opener = (): Out | null => {
    const k = draw(c, 2, 12);
    const p = price(c, item[2], item[3]);
    const v = k * p;
    if (!fitsMoney(c, v)) return null;
    return {
      clause: rng.pick([
        `${who.name} buys ${k} ${item[1]} for $${money(p)} each.`,
        `${who.name} buys ${k} ${item[1]}. Each one costs $${money(p)}.`,
      ]),
      lines: [step(`The ${item[1]} cost `, `${k}*${money(p)}`, money(v), ".", true)],
      state: spent(v, `How much does ${who.name} spend?`),
    };
  };
  return { openers: [opener], moves };
};

/** Rates and time: speed, distance, laps, unit changes (hours to minutes, meters to km). */
const travel: FamilyBuilder = (c) => {
  const { who, rng } = c;
  const [verb, lo, hi] = rng.pick(TRAVEL_MODES);
  let unit = rng.pick(DISTANCE_UNITS);
  let trackLength = 0; // set by the laps opener
  const friend = c.others[0];
  let timer = friend; // who the hours and minutes are about
  const he = who.he;
  const dist = (v: number, ask: string): State => ({ v, kind: "dist", money: false, ask });
  const moves: Move[] = [
    (s) => {
      if (s.kind !== "dist") return null;
      const x = wide(c, 2, 30);
      const v = s.v + x;
      if (!fits(c, v)) return null;
      return {
        clause: `${fresh(c, "when", LATER)} ${he} goes ${x} more ${unit[1]}.`,
        lines: [step("That makes ", `${s.v}+${x}`, String(v), ` ${unit[1]}.`)],
        state: dist(v, `How many ${unit[1]} does ${who.name} travel in all?`),
      };
    },
    (s) => {
      if (s.kind !== "dist" || c.used.has("nextDay")) return null;
      const k = rng.int(2, 3);
      const d2 = s.v * k;
      const v = s.v + d2;
      if (!fits(c, v)) return null;
      return {
        clause: `The next day ${he} goes ${k === 2 ? "twice" : "three times"} as far.`,
        lines: [
          step(`The next day ${he} goes `, `${s.v}*${k}`, String(d2), ` ${unit[1]}.`),
          step(`Over the two days ${he} goes `, `${s.v}+${d2}`, String(v), ` ${unit[1]}.`),
        ],
        state: dist(v, `How many ${unit[1]} does ${who.name} travel over the two days?`),
        tag: "nextDay",
      };
    },
    (s) => {
      if (s.kind !== "dist" || c.used.has("week")) return null;
      const k = draw(c, 2, 7);
      const v = s.v * k;
      if (!fits(c, v)) return null;
      return {
        clause: `${cap(he)} does this ${k} times a week.`,
        lines: [step(`In a week ${he} covers `, `${s.v}*${k}`, String(v), ` ${unit[1]}.`)],
        state: dist(v, `How many ${unit[1]} does ${who.name} cover in a week?`),
        tag: "week",
      };
    },
    (s) => {
      if (s.kind !== "dist" || c.used.has("left")) return null;
      const total = s.v + wide(c, 5, 90);
      if (!fits(c, total)) return null;
      const v = total - s.v;
      return {
        clause: `The whole trip is ${total} ${unit[1]} long.`,
        lines: [step(`${cap(he)} still has `, `${total}-${s.v}`, String(v), ` ${unit[1]} to go.`)],
        state: {
          v,
          kind: "toGo",
          money: false,
          ask: `How many more ${unit[1]} does ${who.name} have to go?`,
        },
        tag: "left",
      };
    },
    (s) => {
      if (s.kind !== "toGo" || s.v < 3) return null;
      const x = draw(c, 1, s.v - 1);
      return {
        clause: `${cap(he)} then goes ${x} more ${unit[1]}.`,
        lines: [
          step(`${cap(he)} still has `, `${s.v}-${x}`, String(s.v - x), ` ${unit[1]} to go.`),
        ],
        state: {
          v: s.v - x,
          kind: "toGo",
          money: false,
          ask: `How many ${unit[1]} does ${who.name} still have to go?`,
        },
      };
    },
    (s) => {
      if (s.kind !== "dist" || c.used.has("round")) return null;
      const v = s.v * 2;
      if (!fits(c, v)) return null;
      return {
        clause: `${cap(he)} comes back the same way.`,
        lines: [step("There and back is ", `${s.v}*2`, String(v), ` ${unit[1]}.`)],
        state: dist(v, `How many ${unit[1]} does ${who.name} go there and back?`),
        tag: "round",
      };
    },
    (s) => {
      if ((s.kind !== "dist" && s.kind !== "toGo") || c.used.has("timed")) return null;
      const ds = divisors(s.v, lo, hi).filter((d) => s.v / d >= 2 && s.v / d <= 24);
      if (ds.length === 0) return null;
      const sp = rng.pick(ds);
      const v = s.v / sp;
      const t = s.kind === "dist" ? friend : who;
      return {
        clause: s.kind === "dist"
          ? `${friend.name} covers the same distance at ${sp} ${unit[1]} an hour.`
          : `${cap(he)} does the rest at ${sp} ${unit[1]} an hour.`,
        lines: [
          step(`${t === who ? cap(he) : t.name} takes `, `${s.v}/${sp}`, String(v), " hours."),
        ],
        state: { v, kind: "hours", money: false, ask: `How many hours does ${t.name} take?` },
        tag: "timed",
        commit: () => {
          timer = t;
        },
      };
    },
    (s) => {
      if (s.kind !== "hours") return null;
      const b = draw(c, 1, 3);
      const v = s.v + b;
      if (!fits(c, v)) return null;
      return {
        clause: `${timer.name} also stops for ${b} ${b === 1 ? "hour" : "hours"} on the way.`,
        lines: [step(`In all ${timer.name} takes `, `${s.v}+${b}`, String(v), " hours.")],
        state: { v, kind: "hours", money: false, ask: `How many hours does the trip take?` },
      };
    },
    (s) => {
      if (s.kind !== "hours" || c.used.has("minutes")) return null;
      const v = s.v * 60;
      if (!fits(c, v)) return null;
      return {
        clause: "",
        lines: [step("That is ", `${s.v}*60`, String(v), " minutes.")],
        state: {
          v,
          kind: "minutes",
          money: false,
          ask: `How many minutes does ${timer.name}'s trip take?`,
        },
        tag: "minutes",
      };
    },
    (s) => {
      if (s.kind !== "minutes") return null;
      const b = draw(c, 5, 45);
      const v = s.v + b;
      if (!fits(c, v)) return null;
      return {
        clause: `${timer.name} then waits ${b} minutes for a ride.`,
        lines: [step("That is ", `${s.v}+${b}`, String(v), " minutes in all.")],
        state: { v, kind: "minutes", money: false, ask: `How many minutes pass in all?` },
      };
    },
    (s) => {
      if (s.kind !== "meters") return null;
      const l = s.v;
      const k = draw(c, 2, 6);
      const extra = k * trackLength;
      const v = l + extra;
      if (!fits(c, extra) || !fits(c, v)) return null;
      return {
        clause: `${cap(he)} then runs ${k} more laps.`,
        lines: [
          step("The extra laps are ", `${k}*${trackLength}`, String(extra), " meters."),
          step(`In all ${he} runs `, `${l}+${extra}`, String(v), " meters."),
        ],
        state: { v, kind: "meters", money: false, ask: `How many meters does ${who.name} run?` },
      };
    },
    (s) => {
      if (s.kind !== "meters") return null;
      const x = 10 * wide(c, 5, 80);
      const v = s.v + x;
      if (!fits(c, v)) return null;
      return {
        clause: `${cap(he)} also walks ${x} meters to warm up.`,
        lines: [step("That is ", `${s.v}+${x}`, String(v), " meters in all.")],
        state: { v, kind: "meters", money: false, ask: `How many meters does ${who.name} cover?` },
      };
    },
    (s) => {
      if (s.kind !== "meters" || s.v % 1000 !== 0) return null;
      const v = s.v / 1000;
      return {
        commit: () => {
          unit = DISTANCE_UNITS[0];
        },
        clause: "",
        lines: [step("That is ", `${s.v}/1000`, String(v), " kilometers.")],
        state: dist(v, `How many kilometers does ${who.name} cover?`),
      };
    },
  ];
  const drive = (): Out | null => {
    const sp = draw(c, lo, hi);
    const t = draw(c, 2, 8);
    const v = sp * t;
    if (!fits(c, v)) return null;
    return {
      clause: `${who.name} ${verb} at ${sp} ${unit[1]} an hour for ${t} hours.`,
      lines: [step(`${cap(he)} goes `, `${sp}*${t}`, String(v), ` ${unit[1]}.`)],
      state: dist(v, `How many ${unit[1]} does ${who.name} travel?`),
    };
  };
  const laps = (): Out | null => {
    trackLength = rng.pick(TRACK_LENGTHS);
    const k = draw(c, 2, 12);
    const v = k * trackLength;
    if (!fits(c, v)) return null;
    return {
      clause: `${who.name} runs ${k} laps of a ${trackLength}-meter track.`,
      lines: [step(`${cap(he)} runs `, `${k}*${trackLength}`, String(v), " meters.")],
      state: { v, kind: "meters", money: false, ask: `How many meters does ${who.name} run?` },
    };
  };
  return { openers: [drive, drive, laps], moves };
};

/** Sharing and grouping: bags of things, fractions and percentages given away, packing. */
const sharing: FamilyBuilder = (c) => {
  const { who, rng } = c;
  const [thing, box] = [rng.pick(THINGS), rng.pick(CONTAINERS)];
  const he = who.he;
  const things = thing[1];
  const have = (v: number, ask: string): State => ({ v, kind: "have", money: false, ask });
  const left = `How many ${things} does ${who.name} have left?`;
  const moves: Move[] = [
    (s) => {
      if (s.kind !== "have") return null;
      const dens = [2, 3, 4, 5].filter((d) => s.v % d === 0);
      if (dens.length === 0) return null;
      const den = rng.pick(dens);
      const num = numerator(c, den);
      const g = s.v * num / den;
      const expr = fractionOf(s.v, num, den);
      const rel = fresh(c, "rel", RELATIVES);
      return {
        clause: `${cap(he)} gives ${fractionWords(num, den)} of them to ${who.his} ${rel}.`,
        lines: [
          step(`${cap(he)} gives away `, expr, String(g), ` ${things}.`),
          step(`${cap(he)} has `, `${s.v}-${g}`, String(s.v - g), ` ${things} left.`),
        ],
        state: have(s.v - g, left),
      };
    },
    (s) => {
      if (s.kind !== "have") return null;
      const pcts = exactPercents(s.v, [10, 20, 25, 30, 40, 50, 60, 75, 80]);
      if (pcts.length === 0) return null;
      const p = rng.pick(pcts);
      const g = s.v * p / 100;
      return {
        clause: `${cap(he)} sells ${p}% of them.`,
        lines: [
          step(`${cap(he)} sells `, `${s.v}*${p}/100`, String(g), ` ${things}.`),
          step(`${cap(he)} has `, `${s.v}-${g}`, String(s.v - g), ` ${things} left.`),
        ],
        state: have(s.v - g, left),
      };
    },
    (s) => {
      if (s.kind !== "have") return null;
      const n = draw(c, 2, 6);
      const k = wide(c, 4, 12);
      const e = n * k;
      const v = s.v + e;
      if (!fits(c, v)) return null;
      return {
        clause: `${cap(he)} buys ${n} packs with ${k} ${things} in each pack.`,
        lines: [
          step("The packs hold ", `${n}*${k}`, String(e), ` ${things}.`),
          step(`Now ${he} has `, `${s.v}+${e}`, String(v), ` ${things}.`),
        ],
        state: have(v, `How many ${things} does ${who.name} have now?`),
      };
    },
    (s) => {
      if (s.kind !== "have" || s.v < 3) return null;
      const x = draw(c, 1, s.v - 1);
      return {
        clause: `${cap(he)} ${fresh(c, "lose", LOSE)} ${x} of them.`,
        lines: [step(`${cap(he)} has `, `${s.v}-${x}`, String(s.v - x), ` ${things} left.`)],
        state: have(s.v - x, left),
      };
    },
    (s) => {
      if (s.kind !== "have" || c.used.has("gift")) return null;
      const g = s.v * 2;
      const v = s.v + g;
      if (!fits(c, v)) return null;
      const rel = fresh(c, "rel", RELATIVES);
      return {
        clause: `${cap(who.his)} ${rel} gives ${who.him} twice as many as ${he} has.`,
        lines: [
          step(`The ${rel} gives ${who.him} `, `${s.v}*2`, String(g), ` ${things}.`),
          step(`Now ${he} has `, `${s.v}+${g}`, String(v), ` ${things}.`),
        ],
        state: have(v, `How many ${things} does ${who.name} have now?`),
        tag: "gift",
      };
    },
    (s) => {
      if (s.kind !== "have") return null;
      const ks = divisors(s.v, 2, 12).filter((k) => k < s.v);
      if (ks.length === 0) return null;
      const k = rng.pick(ks);
      return {
        clause: `${cap(he)} shares them equally among ${k} friends.`,
        lines: [step("Each friend gets ", `${s.v}/${k}`, String(s.v / k), ` ${things}.`)],
        state: have(s.v / k, `How many ${things} does each friend get?`),
        final: true,
      };
    },
    (s) => {
      if (s.kind !== "have") return null;
      const ks = divisors(s.v, 2, 25).filter((k) => k < s.v);
      if (ks.length === 0) return null;
      const k = rng.pick(ks);
      return {
        clause: `${cap(he)} packs them into ${box[1]} of ${k}.`,
        lines: [step(`${cap(he)} fills `, `${s.v}/${k}`, String(s.v / k), ` ${box[1]}.`)],
        state: {
          v: s.v / k,
          kind: "boxes",
          money: false,
          ask: `How many ${box[1]} does ${who.name} fill?`,
        },
      };
    },
    (s) => {
      if (s.kind !== "boxes") return null;
      const p = wide(c, 2, 15);
      const v = s.v * p * 100;
      if (!fitsMoney(c, v)) return null;
      return {
        clause: `${cap(he)} sells each ${box[0]} for $${p}.`,
        lines: [step(`${cap(he)} earns `, `${s.v}*${p}`, money(v), ".", true)],
        state: { v, kind: "cash", money: true, ask: `How much money does ${who.name} earn?` },
      };
    },
    (s) => {
      if (s.kind !== "cash" || s.v < 200) return null;
      const x = draw(c, 1, s.v / 100 - 1);
      const v = s.v - x * 100;
      return {
        clause: `${cap(he)} spends $${x} on ${fresh(c, "buy", PURCHASES)}.`,
        lines: [step(`${cap(he)} has `, `${money(s.v)}-${x}`, money(v), " left.", true)],
        state: {
          v,
          kind: "cash",
          money: true,
          ask: `How much money does ${who.name} have left?`,
        },
      };
    },
  ];
  const bags = (): Out | null => {
    const a = draw(c, 2, 12);
    const b = wide(c, 2, 30);
    const v = a * b;
    if (!fits(c, v)) return null;
    return {
      clause: `${who.name} has ${a} ${box[1]} with ${b} ${things} in each ${box[0]}.`,
      lines: [step(`${cap(he)} has `, `${a}*${b}`, String(v), ` ${things}.`)],
      state: have(v, `How many ${things} does ${who.name} have?`),
    };
  };
  const picks = (): Out | null => {
    const [d1, d2] = [fresh(c, "day", DAYS), fresh(c, "day", DAYS)];
    const a = wide(c, 5, 60);
    const b = wide(c, 5, 60);
    const v = a + b;
    if (!fits(c, v)) return null;
    return {
      clause: `${who.name} collects ${a} ${things} on ${d1} and ${b} ${things} on ${d2}.`,
      lines: [step(`${cap(he)} collects `, `${a}+${b}`, String(v), ` ${things}.`)],
      state: have(v, `How many ${things} does ${who.name} collect?`),
    };
  };
  return { openers: [bags, picks], moves };
};

/** Ages: people older, younger, a multiple or a half of another; sums, differences, futures. */
const ages: FamilyBuilder = (c) => {
  const { rng } = c;
  const maxAge = Math.min(c.maxValue, 100);
  const people = [c.who, ...c.others];
  let at = 1; // index in `people` of the person the current state is about
  let prevAge = 0; // the age of the person before
  let additive = false; // whether the last relation was "older" or "younger" (see the diff move)
  const age = (v: number, ask: string): State => ({ v, kind: "age", money: false, ask });
  const fitsAge = (v: number) => v >= 1 && v <= maxAge;

  // A new person's age relative to the current one: [clause, expr, value, additive].
  type Relation = [string, string, number, boolean];
  const relative = (x: string, y: string, v: number): Relation | null => {
    const options: Relation[] = [];
    const d = draw(c, 2, 30);
    if (fitsAge(v + d)) {
      options.push([`${y} is ${d} years older than ${x}.`, `${v}+${d}`, v + d, true]);
    }
    const e = draw(c, 1, Math.max(1, v - 1));
    if (fitsAge(v - e)) {
      options.push([`${y} is ${e} years younger than ${x}.`, `${v}-${e}`, v - e, true]);
    }
    if (v % 2 === 0 && v >= 4) {
      options.push([`${y} is half as old as ${x}.`, `${v}/2`, v / 2, false]);
    }
    const k = rng.int(2, 4);
    if (fitsAge(v * k)) {
      const times = k === 2 ? "twice" : `${k} times`;
      options.push([`${y} is ${times} as old as ${x}.`, `${v}*${k}`, v * k, false]);
    }
    return options.length === 0 ? null : rng.pick(options);
  };

  const moves: Move[] = [
    (s) => {
      if (s.kind !== "age" || at + 1 >= people.length) return null;
      const x = people[at].name;
      const y = people[at + 1].name;
      const r = relative(x, y, s.v);
      if (r === null) return null;
      return {
        commit: () => {
          prevAge = s.v;
          additive = r[3];
          at++;
        },
        clause: r[0],
        lines: [step(`${y} is `, r[1], String(r[2]), " years old.")],
        state: age(r[2], `How old is ${y}?`),
      };
    },
    (s) => {
      if (s.kind !== "age" || !fits(c, prevAge + s.v)) return null;
      const v = prevAge + s.v;
      const [x, y] = [people[at - 1].name, people[at].name];
      return {
        clause: "",
        lines: [step("Together they are ", `${prevAge}+${s.v}`, String(v), " years old.")],
        state: age(v, `How old are ${x} and ${y} together?`),
        final: true,
      };
    },
    (s) => {
      if (s.kind !== "age") return null;
      const y = draw(c, 2, 20);
      const v = s.v + y;
      if (!fits(c, v)) return null;
      const name = people[at].name;
      return {
        clause: "",
        lines: [step(`In ${y} years ${name} will be `, `${s.v}+${y}`, String(v), " years old.")],
        state: age(v, `How old will ${name} be in ${y} years?`),
        final: true,
      };
    },
    (s) => {
      // After "older by d" the difference is d, already in the question: not a step.
      if (s.kind !== "age" || prevAge === s.v || additive) return null;
      const [older, younger] = prevAge > s.v ? [at - 1, at] : [at, at - 1];
      const [a, b] = prevAge > s.v ? [prevAge, s.v] : [s.v, prevAge];
      const [o, y] = [people[older].name, people[younger].name];
      return {
        clause: "",
        lines: [step(`${o} is `, `${a}-${b}`, String(a - b), ` years older than ${y}.`)],
        state: age(a - b, `How many years older is ${o} than ${y}?`),
        final: true,
      };
    },
  ];
  const opener = (): Out | null => {
    const a = draw(c, 3, 40);
    if (!fitsAge(a)) return null;
    const [x, y] = [people[0].name, people[1].name];
    const r = relative(x, y, a);
    if (r === null) return null;
    prevAge = a;
    additive = r[3];
    at = 1;
    return {
      clause: `${x} is ${a} years old. ${r[0]}`,
      lines: [step(`${y} is `, r[1], String(r[2]), " years old.")],
      state: age(r[2], `How old is ${y}?`),
    };
  };
  return { openers: [opener], moves };
};

/** Work and earnings: hourly pay, piece rates, weeks, bonuses, taxes, savings goals. */
const earnings: FamilyBuilder = (c) => {
  const { who, rng } = c;
  const he = who.he;
  let period: "day" | "week" | null = "day";
  const pay = (v: number, ask: string): State => ({ v, kind: "pay", money: true, ask });
  const moves: Move[] = [
    (s) => {
      if (s.kind !== "pay" || period !== "day") return null;
      const d = draw(c, 3, 7);
      const v = s.v * d;
      if (!fitsMoney(c, v)) return null;
      return {
        commit: () => {
          period = "week";
        },
        clause: `${cap(he)} works ${d} days a week.`,
        lines: [step(`In a week ${he} earns `, `${money(s.v)}*${d}`, money(v), ".", true)],
        state: pay(v, `How much does ${who.name} earn in a week?`),
      };
    },
    (s) => {
      if (s.kind !== "pay" || period !== "week") return null;
      const n = draw(c, 2, 8);
      const v = s.v * n;
      if (!fitsMoney(c, v)) return null;
      return {
        commit: () => {
          period = null;
        },
        clause: `${cap(he)} works like this for ${n} weeks.`,
        lines: [step(`In ${n} weeks ${he} earns `, `${money(s.v)}*${n}`, money(v), ".", true)],
        state: pay(v, `How much does ${who.name} earn in ${n} weeks?`),
      };
    },
    (s) => {
      if (s.kind !== "pay") return null;
      const b = 5 * wide(c, 1, 20);
      const v = s.v + b * 100;
      if (!fitsMoney(c, v)) return null;
      return {
        commit: () => {
          period = null;
        },
        clause: `${cap(he)} also gets ${fresh(c, "extra", EXTRA_PAY)(b)}.`,
        lines: [step(`Now ${he} has `, `${money(s.v)}+${b}`, money(v), ".", true)],
        state: pay(v, `How much money does ${who.name} have in all?`),
      };
    },
    (s) => {
      if (s.kind !== "pay" || s.v < 300) return null;
      const x = draw(c, 1, s.v / 100 - 1);
      const v = s.v - x * 100;
      return {
        commit: () => {
          period = null;
        },
        clause: `${cap(he)} spends $${x} on ${fresh(c, "buy", PURCHASES)}.`,
        lines: [step(`${cap(he)} has `, `${money(s.v)}-${x}`, money(v), " left.", true)],
        state: pay(v, `How much money does ${who.name} have left?`),
      };
    },
    (s) => {
      if (s.kind !== "pay" || c.used.has("tax")) return null;
      const pcts = exactPercents(s.v / 100, [5, 10, 15, 20, 25]);
      if (pcts.length === 0) return null;
      const p = rng.pick(pcts);
      const t = s.v * p / 100;
      return {
        commit: () => {
          period = null;
        },
        clause: `${cap(he)} pays ${p}% of it in taxes.`,
        lines: [
          step("The tax is ", `${money(s.v)}*${p}/100`, money(t), ".", true),
          step(`${cap(he)} keeps `, `${money(s.v)}-${money(t)}`, money(s.v - t), ".", true),
        ],
        state: pay(s.v - t, `How much does ${who.name} keep after taxes?`),
        tag: "tax",
      };
    },
    (s) => {
      if (s.kind !== "pay") return null;
      const pcts = exactPercents(s.v / 100, [10, 20, 25, 50]);
      if (pcts.length === 0) return null;
      const p = rng.pick(pcts);
      const v = s.v * p / 100;
      return {
        commit: () => {
          period = null;
        },
        clause: `${cap(he)} saves ${p}% of it.`,
        lines: [step(`${cap(he)} saves `, `${money(s.v)}*${p}/100`, money(v), ".", true)],
        state: pay(v, `How much does ${who.name} save?`),
        final: true,
      };
    },
    (s) => {
      if (s.kind !== "pay" || period === null) return null;
      const k = draw(c, 2, 10);
      const cost = s.v * k;
      if (!fitsMoney(c, cost)) return null;
      return {
        clause: `${cap(he)} wants to buy ${fresh(c, "buy", PURCHASES)} that costs $${
          money(cost)
        } in all.`,
        lines: [
          step(`${cap(he)} needs `, `${money(cost)}/${money(s.v)}`, String(k), ` ${period}s.`),
        ],
        state: { v: k, kind: "count", money: false, ask: `How many ${period}s must ${he} work?` },
        final: true,
      };
    },
  ];
  const hourly = (): Out | null => {
    const w = wide(c, 8, 30);
    const h = draw(c, 2, 10);
    const v = w * h * 100;
    if (!fitsMoney(c, v)) return null;
    return {
      clause: `${who.name} earns $${w} an hour and works ${h} hours a day.`,
      lines: [step(`${cap(he)} earns `, `${w}*${h}`, money(v), " a day.", true)],
      state: pay(v, `How much does ${who.name} earn in a day?`),
    };
  };
  const piece = (): Out | null => {
    const [job, jobs, verb] = rng.pick(JOBS);
    const p = wide(c, 3, 25);
    const k = draw(c, 2, 12);
    const v = p * k * 100;
    if (!fitsMoney(c, v)) return null;
    return {
      clause: `${who.name} gets $${p} for each ${job} ${he} ${verb}. ${
        cap(he)
      } ${verb} ${k} ${jobs} a day.`,
      lines: [step(`${cap(he)} earns `, `${p}*${k}`, money(v), " a day.", true)],
      state: pay(v, `How much does ${who.name} earn in a day?`),
    };
  };
  return { openers: [hourly, piece], moves };
};

/** Cooking: amounts per batch or per item, extra and ratio ingredients, bags, prices. */
const cooking: FamilyBuilder = (c) => {
  const { who, rng } = c;
  const he = who.he;
  const [ing, ing2] = rng.sample(INGREDIENTS, 2);
  const bake = rng.pick(BAKES);
  const grams = (v: number, ask: string): State => ({ v, kind: "grams", money: false, ask });
  const cost = (v: number, ask: string): State => ({ v, kind: "cost", money: true, ask });
  const moves: Move[] = [
    (s) => {
      if (s.kind !== "grams") return null;
      const x = 5 * wide(c, 2, 40);
      const v = s.v + x;
      if (!fits(c, v)) return null;
      return {
        clause: `${cap(he)} also uses ${x} grams of ${ing} for ${fresh(c, "use", EXTRA_USE)}.`,
        lines: [step("That is ", `${s.v}+${x}`, String(v), ` grams of ${ing}.`)],
        state: grams(v, `How many grams of ${ing} does ${who.name} use in all?`),
      };
    },
    (s) => {
      if (s.kind !== "grams" || s.v < 20 || c.used.has("home")) return null;
      const x = 5 * draw(c, 1, Math.floor((s.v - 5) / 5));
      if (x >= s.v) return null;
      return {
        clause: `${cap(he)} already has ${x} grams of ${ing} at home.`,
        lines: [step(`${cap(he)} has to buy `, `${s.v}-${x}`, String(s.v - x), " grams.")],
        state: {
          v: s.v - x,
          kind: "buy",
          money: false,
          ask: `How many grams of ${ing} does ${who.name} have to buy?`,
        },
        tag: "home",
      };
    },
    (s) => {
      if (s.kind !== "buy" || s.v < 10) return null;
      const x = 5 * draw(c, 1, Math.floor((s.v - 5) / 5));
      if (x >= s.v) return null;
      const rel = fresh(c, "rel", RELATIVES);
      return {
        clause: `${cap(who.his)} ${rel} gives ${who.him} ${x} grams of ${ing}.`,
        lines: [step("Now there are ", `${s.v}-${x}`, String(s.v - x), " grams left to buy.")],
        state: {
          v: s.v - x,
          kind: "buy",
          money: false,
          ask: `How many grams of ${ing} does ${who.name} still have to buy?`,
        },
      };
    },
    (s) => {
      if (s.kind !== "buy") return null;
      const x = 5 * wide(c, 2, 20);
      const v = s.v + x;
      if (!fits(c, v)) return null;
      return {
        clause: `${cap(he)} decides to make ${x} grams more for ${fresh(c, "use", EXTRA_USE)}.`,
        lines: [step(`${cap(he)} has to buy `, `${s.v}+${x}`, String(v), " grams.")],
        state: {
          v,
          kind: "buy",
          money: false,
          ask: `How many grams of ${ing} does ${who.name} have to buy?`,
        },
      };
    },
    (s) => {
      if (s.kind !== "grams" || c.used.has("ratio")) return null;
      const dens = [2, 3, 4, 5].filter((d) => s.v % d === 0);
      if (dens.length === 0) return null;
      const den = rng.pick(dens);
      const num = numerator(c, den);
      const w = s.v * num / den;
      const v = s.v + w;
      if (!fits(c, v)) return null;
      return {
        clause: `${cap(he)} uses ${fractionWords(num, den)} as much ${ing2} as ${ing}.`,
        lines: [
          step(`${cap(he)} uses `, fractionOf(s.v, num, den), String(w), ` grams of ${ing2}.`),
          step("Together that is ", `${s.v}+${w}`, String(v), " grams."),
        ],
        state: grams(v, `How many grams of ${ing} and ${ing2} does ${who.name} use together?`),
        tag: "ratio",
      };
    },
    (s) => {
      if ((s.kind !== "grams" && s.kind !== "buy") || c.used.has("bags")) return null;
      const sizes = [50, 100, 125, 200, 250, 500, 1000].filter((b) => s.v % b === 0 && b < s.v);
      if (sizes.length === 0) return null;
      const b = rng.pick(sizes);
      return {
        clause: `${cap(ing)} is sold in ${b}-gram bags.`,
        lines: [step(`${cap(he)} needs `, `${s.v}/${b}`, String(s.v / b), " bags.")],
        state: {
          v: s.v / b,
          kind: "bags",
          money: false,
          ask: `How many bags of ${ing} does ${who.name} need?`,
        },
        tag: "bags",
      };
    },
    (s) => {
      if ((s.kind !== "grams" && s.kind !== "buy") || s.v % 1000 !== 0) return null;
      return {
        clause: "",
        lines: [step("That is ", `${s.v}/1000`, String(s.v / 1000), " kilograms.")],
        state: grams(s.v / 1000, `How many kilograms of ${ing} is that?`),
        final: true,
      };
    },
    (s) => {
      if (s.kind !== "bags") return null;
      const p = price(c, 1, 9);
      const v = s.v * p;
      if (!fitsMoney(c, v)) return null;
      return {
        clause: `Each bag costs $${money(p)}.`,
        lines: [step("The bags cost ", `${s.v}*${money(p)}`, money(v), ".", true)],
        state: cost(v, `How much does ${who.name} spend on ${ing}?`),
      };
    },
    (s) => {
      if (s.kind !== "cost") return null;
      const tool = fresh(c, "tool", KITCHEN_TOOLS);
      const q = price(c, 2, 15);
      const v = s.v + q;
      if (!fitsMoney(c, v)) return null;
      return {
        clause: `${cap(he)} also buys ${art(tool)} for $${money(q)}.`,
        lines: [step(`In all ${he} spends `, `${money(s.v)}+${money(q)}`, money(v), ".", true)],
        state: cost(v, `How much does ${who.name} spend in all?`),
      };
    },
    (s) => s.kind === "cost" ? change(c, s) : null,
    (s) => s.kind === "cost" ? split(c, s) : null,
  ];
  const batches = (): Out | null => {
    const g = 5 * wide(c, 4, 80);
    const k = draw(c, 2, 8);
    const v = g * k;
    if (!fits(c, v)) return null;
    return {
      clause: `A batch of ${bake[1]} needs ${g} grams of ${ing}. ${who.name} makes ${k} batches.`,
      lines: [step(`${cap(he)} needs `, `${g}*${k}`, String(v), ` grams of ${ing}.`)],
      state: grams(v, `How many grams of ${ing} does ${who.name} need?`),
    };
  };
  const each = (): Out | null => {
    const g = wide(c, 5, 60);
    const k = draw(c, 4, 24);
    const v = g * k;
    if (!fits(c, v)) return null;
    return {
      clause: `Each ${bake[0]} needs ${g} grams of ${ing}. ${who.name} bakes ${k} ${bake[1]}.`,
      lines: [step(`${cap(he)} needs `, `${g}*${k}`, String(v), ` grams of ${ing}.`)],
      state: grams(v, `How many grams of ${ing} does ${who.name} need?`),
    };
  };
  return { openers: [batches, each], moves };
};

/** Reading and practice schedules: pages and minutes per day, weeks, what is left, hours. */
const schedule: FamilyBuilder = (c) => {
  const { who, rng } = c;
  const he = who.he;
  const instrument = rng.pick(PRACTICE);
  let perDay = 0;
  const pages = (v: number, ask: string): State => ({ v, kind: "pages", money: false, ask });
  const left = (v: number): State => ({
    v,
    kind: "left",
    money: false,
    ask: `How many pages does ${who.name} have left to read?`,
  });
  const minutes = (v: number, ask: string): State => ({ v, kind: "minutes", money: false, ask });
  const moves: Move[] = [
    (s) => {
      if (s.kind !== "pages") return null;
      const x = wide(c, 5, 60);
      const v = s.v + x;
      if (!fits(c, v)) return null;
      return {
        clause: `On ${fresh(c, "day", DAYS)} ${he} reads ${x} more pages.`,
        lines: [step(`${cap(he)} reads `, `${s.v}+${x}`, String(v), " pages in all.")],
        state: pages(v, `How many pages does ${who.name} read in all?`),
      };
    },
    (s) => {
      if (s.kind !== "pages" || c.used.has("twice")) return null;
      const w = s.v * 2;
      const v = s.v + w;
      if (!fits(c, v)) return null;
      return {
        clause: `The next week ${he} reads twice as many pages.`,
        lines: [
          step(`The next week ${he} reads `, `${s.v}*2`, String(w), " pages."),
          step(`In the two weeks ${he} reads `, `${s.v}+${w}`, String(v), " pages."),
        ],
        state: pages(v, `How many pages does ${who.name} read in the two weeks?`),
        tag: "twice",
      };
    },
    (s) => {
      if (s.kind !== "pages" || c.used.has("book")) return null;
      const book = s.v + wide(c, 10, 300);
      if (!fits(c, book)) return null;
      return {
        clause: `The book has ${book} pages.`,
        lines: [step(`${cap(he)} has `, `${book}-${s.v}`, String(book - s.v), " pages left.")],
        state: left(book - s.v),
        tag: "book",
      };
    },
    (s) => {
      if (s.kind !== "left" || s.v < 3) return null;
      const x = draw(c, 1, s.v - 1);
      return {
        clause: `On ${fresh(c, "day", DAYS)} ${he} reads ${x} of them.`,
        lines: [step(`${cap(he)} still has `, `${s.v}-${x}`, String(s.v - x), " pages left.")],
        state: left(s.v - x),
      };
    },
    (s) => {
      if (s.kind !== "left") return null;
      const rs = divisors(s.v, 2, 60).filter((r) => r < s.v);
      if (rs.length === 0) return null;
      const r = rng.pick(rs);
      return {
        clause: `From now on ${he} reads ${r} pages a day.`,
        lines: [step(`${cap(he)} needs `, `${s.v}/${r}`, String(s.v / r), " more days.")],
        state: {
          v: s.v / r,
          kind: "days",
          money: false,
          ask: `How many more days does ${who.name} need to finish the book?`,
        },
        final: true,
      };
    },
    (s) => {
      if (s.kind !== "minutes" || c.used.has("weeks")) return null;
      const w = draw(c, 2, 8);
      const v = s.v * w;
      if (!fits(c, v)) return null;
      return {
        clause: `${cap(he)} keeps this up for ${w} weeks.`,
        lines: [step(`In ${w} weeks that is `, `${s.v}*${w}`, String(v), " minutes.")],
        state: minutes(v, `How many minutes does ${who.name} practice in ${w} weeks?`),
        tag: "weeks",
      };
    },
    (s) => {
      if (s.kind !== "minutes") return null;
      const x = 5 * wide(c, 1, 12);
      const v = s.v + x;
      if (!fits(c, v)) return null;
      return {
        clause: `${cap(he)} also practices ${x} extra minutes on ${fresh(c, "day", DAYS)}.`,
        lines: [step("That is ", `${s.v}+${x}`, String(v), " minutes in all.")],
        state: minutes(v, `How many minutes does ${who.name} practice in all?`),
      };
    },
    (s) => {
      if (s.kind !== "minutes" || c.used.has("miss") || perDay >= s.v) return null;
      return {
        clause: `${cap(he)} misses one day because ${he} is sick.`,
        lines: [
          step(`${cap(he)} practices `, `${s.v}-${perDay}`, String(s.v - perDay), " minutes."),
        ],
        state: minutes(s.v - perDay, `How many minutes does ${who.name} practice?`),
        tag: "miss",
      };
    },
    (s) => {
      if (s.kind !== "minutes" || s.v < 10) return null;
      const x = draw(c, 1, Math.min(30, s.v - 1));
      if (x >= s.v) return null;
      return {
        clause: `On ${fresh(c, "day", DAYS)} ${he} stops ${x} minutes early.`,
        lines: [step("That leaves ", `${s.v}-${x}`, String(s.v - x), " minutes.")],
        state: minutes(s.v - x, `How many minutes does ${who.name} practice?`),
      };
    },
    (s) => {
      if (s.kind !== "pages" || s.v < 4 || c.used.has("pictures")) return null;
      const x = draw(c, 1, s.v - 1);
      if (x >= s.v) return null;
      return {
        clause: `${x} of those pages are only pictures.`,
        lines: [step(`${cap(he)} reads `, `${s.v}-${x}`, String(s.v - x), " pages of text.")],
        state: pages(s.v - x, `How many pages of text does ${who.name} read?`),
        tag: "pictures",
      };
    },
    (s) => {
      if (s.kind !== "left") return null;
      const x = wide(c, 2, 40);
      const v = s.v + x;
      if (!fits(c, v)) return null;
      return {
        clause: `${cap(who.his)} teacher adds ${x} pages from another book.`,
        lines: [step(`Now ${he} has `, `${s.v}+${x}`, String(v), " pages left.")],
        state: left(v),
      };
    },
    (s) => {
      if (s.kind !== "minutes" || s.v % 60 !== 0) return null;
      return {
        clause: "",
        lines: [step("That is ", `${s.v}/60`, String(s.v / 60), " hours.")],
        state: minutes(s.v / 60, `How many hours is that?`),
        final: true,
      };
    },
  ];
  const reading = (): Out | null => {
    const p = wide(c, 5, 40);
    const d = draw(c, 2, 10);
    const v = p * d;
    if (!fits(c, v)) return null;
    return {
      clause: `${who.name} reads ${p} pages a day for ${d} days.`,
      lines: [step(`${cap(he)} reads `, `${p}*${d}`, String(v), " pages.")],
      state: pages(v, `How many pages does ${who.name} read?`),
    };
  };
  const practice = (): Out | null => {
    perDay = 5 * draw(c, 2, 12);
    const d = draw(c, 2, 7);
    const v = perDay * d;
    if (!fits(c, v)) return null;
    return {
      clause: `${who.name} practices ${instrument} for ${perDay} minutes a day, ${d} days a week.`,
      lines: [step(`${cap(he)} practices `, `${perDay}*${d}`, String(v), " minutes a week.")],
      state: minutes(v, `How many minutes does ${who.name} practice in a week?`),
    };
  };
  return { openers: [reading, practice], moves };
};

/** The families by name, in the order FAMILIES lists them. */
export const FAMILY_BUILDERS = {
  shopping,
  travel,
  sharing,
  ages,
  earnings,
  cooking,
  schedule,
} as const satisfies Record<string, FamilyBuilder>;
