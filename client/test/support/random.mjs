// A seeded PRNG (mulberry32) for random tests: the seed comes from
// TANDEM_SEED or is drawn, and is printed so a failure can be replayed.
export function seeded(name) {
  const seed = process.env.TANDEM_SEED ? Number(process.env.TANDEM_SEED) : (Math.random() * 2 ** 32) >>> 0;
  console.log(`# ${name}: seed ${seed} (replay with TANDEM_SEED=${seed})`);
  return rngFrom(seed);
}

/** The mulberry32 generator for one given seed. */
export function rngFrom(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    seed,
    next,
    int: (n) => Math.floor(next() * n),
    pick: (list) => list[Math.floor(next() * list.length)],
  };
}

const ALPHABET = ['a', 'b', 'c', 'd', 'e', ' ', '\n', 'é', '😀', '𝒳', '中'];

/** A random edit of `text` (UTF-16, never splitting a pair), as delta ops. */
export function randomEdit(rng, text) {
  const points = [...text];
  const at = rng.int(points.length + 1);
  const offset = points.slice(0, at).join('').length;
  const roll = rng.next();
  if (roll < 0.6 || points.length === 0) {
    let s = '';
    for (let i = 1 + rng.int(3); i > 0; i--) s += rng.pick(ALPHABET);
    const attributes = rng.next() < 0.15 ? { bold: true } : undefined;
    return [...(offset ? [{ retain: offset }] : []), attributes ? { insert: s, attributes } : { insert: s }];
  }
  const n = Math.min(points.length - at, 1 + rng.int(3));
  const len = points.slice(at, at + n).join('').length;
  if (len === 0) return [{ insert: rng.pick(ALPHABET) }];
  if (roll < 0.9) return [...(offset ? [{ retain: offset }] : []), { delete: len }];
  return [...(offset ? [{ retain: offset }] : []), { retain: len, attributes: { italic: rng.next() < 0.5 ? true : null } }];
}
