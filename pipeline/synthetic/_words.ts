/**
 * The vocabulary of the synthetic generator: names, objects, units and places. Written for
 * this project; every list is short enough to read, long enough that records vary.
 *
 * @module
 */
import type { Person } from "./_kit.ts";

const SHE = ["Ava", "Maya", "Lena", "Zoe", "Priya", "Sofia", "Hana", "Nora", "Amara", "Elif"]
  .concat(["Grace", "Mei", "Lucia", "Ines", "Tara", "Chloe", "Fatima", "Rosa", "Yuki", "Keisha"]);
const HE = ["Liam", "Omar", "Diego", "Kenji", "Noah", "Ravi", "Mateo", "Ethan", "Kofi", "Jonas"]
  .concat(["Arjun", "Leo", "Samir", "Tomas", "Felix", "Marcus", "Ivan", "Hugo", "Malik", "Owen"]);

/** Every name the generator uses, with pronouns. */
export const PEOPLE: readonly Person[] = [
  ...SHE.map((name) => ({ name, he: "she", his: "her", him: "her" })),
  ...HE.map((name) => ({ name, he: "he", his: "his", him: "him" })),
];

/** A countable thing: singular and plural. */
export type Noun = readonly [singular: string, plural: string];

/** Shop items with a plausible price range in whole dollars. */
export const SHOP_ITEMS: readonly (readonly [string, string, number, number])[] = [
  ["notebook", "notebooks", 1, 6],
  ["pen", "pens", 1, 3],
  ["T-shirt", "T-shirts", 5, 25],
  ["book", "books", 4, 20],
  ["toy car", "toy cars", 2, 10],
  ["mug", "mugs", 3, 12],
  ["plant", "plants", 4, 15],
  ["movie ticket", "movie tickets", 5, 15],
  ["sandwich", "sandwiches", 3, 9],
  ["candle", "candles", 2, 9],
  ["puzzle", "puzzles", 6, 20],
  ["cupcake", "cupcakes", 1, 4],
  ["lamp", "lamps", 10, 45],
  ["scarf", "scarves", 6, 25],
  ["phone case", "phone cases", 5, 18],
  ["water bottle", "water bottles", 2, 12],
];

/** Things people collect, share and pack. */
export const THINGS: readonly Noun[] = [
  ["marble", "marbles"],
  ["sticker", "stickers"],
  ["apple", "apples"],
  ["cookie", "cookies"],
  ["seashell", "seashells"],
  ["pencil", "pencils"],
  ["trading card", "trading cards"],
  ["strawberry", "strawberries"],
  ["balloon", "balloons"],
  ["egg", "eggs"],
  ["stamp", "stamps"],
  ["bead", "beads"],
];

/** Containers for packing things. */
export const CONTAINERS: readonly Noun[] = [
  ["bag", "bags"],
  ["box", "boxes"],
  ["jar", "jars"],
  ["basket", "baskets"],
  ["tin", "tins"],
];

/** Relatives and friends a character gives to or buys for. */
export const RELATIVES = ["sister", "brother", "cousin", "friend", "neighbor", "aunt", "uncle"];

/** Ways to travel, with a plausible speed range per hour. */
export const TRAVEL_MODES: readonly (readonly [verb: string, lo: number, hi: number])[] = [
  ["drives", 30, 80],
  ["cycles", 10, 25],
  ["walks", 3, 6],
  ["rides a scooter", 8, 20],
  ["rows a boat", 3, 8],
];

/** Distance units. */
export const DISTANCE_UNITS: readonly Noun[] = [["kilometer", "kilometers"], ["mile", "miles"]];

/** Lengths of running tracks, in meters. */
export const TRACK_LENGTHS = [200, 250, 400, 500];

/** Paid jobs: the thing done and the verb. */
export const JOBS: readonly (readonly [singular: string, plural: string, verb: string])[] = [
  ["lawn", "lawns", "mows"],
  ["car", "cars", "washes"],
  ["dog", "dogs", "walks"],
  ["cake", "cakes", "bakes"],
  ["poster", "posters", "designs"],
  ["bike", "bikes", "repairs"],
];

/** Things bought with earnings or savings. */
export const PURCHASES = ["a bike", "a game", "a jacket", "groceries", "a concert ticket", "books"];

/** Baking ingredients sold by weight. */
export const INGREDIENTS = ["flour", "sugar", "butter", "oats", "cheese", "chocolate", "rice"];

/** What gets baked, one item and the batch. */
export const BAKES: readonly Noun[] = [
  ["muffin", "muffins"],
  ["cookie", "cookies"],
  ["bread roll", "bread rolls"],
  ["pancake", "pancakes"],
  ["scone", "scones"],
];

/** Kitchen tools bought alongside ingredients. */
export const KITCHEN_TOOLS = ["whisk", "baking tray", "measuring cup", "apron", "rolling pin"];

/** Instruments and hobbies practiced by the minute. */
export const PRACTICE = ["piano", "violin", "guitar", "drums", "flute", "chess"];

/** Days on which extra things happen. */
export const DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
