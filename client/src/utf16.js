/**
 * Code points ⇄ UTF-16 at the editor edge.
 *
 * The wire and the server count Unicode code points (😀 is 1); editors and
 * quill-delta count UTF-16 code units (😀 is 2). Every delta, position and
 * length is converted here, exactly once, where it crosses between the
 * document model (code points) and an editor (UTF-16). Nothing else in the
 * client converts.
 *
 * Converting a count needs the text it covers: "retain 3 code points" is 3
 * to 6 UTF-16 units depending on what is there. So every function takes the
 * document's text *before* the delta, as a JS string in which each embed is
 * one character (U+FFFC, see `textOf`), or, when its `SurrogateIndex` is
 * given, anything with the text's `length` (a `ChunkedText`): the index then
 * answers every question about pairs.
 *
 * A UTF-16 boundary inside a surrogate pair is never turned into a code point
 * boundary that splits a character: it is moved past the pair, and the
 * result is reported as not `exact` (the editor then holds something the
 * model cannot, and the binding re-renders the editor from the model).
 *
 * Walking the text to convert costs O(n) per op, which on a long
 * emoji-heavy document is most of a keystroke. So every function also takes
 * an optional `SurrogateIndex` of the text: the sorted positions of its
 * surrogate pairs, kept up to date edit by edit (`apply`), so a conversion
 * costs O(pairs / CHUNK + log CHUNK) instead.
 *
 * Pure: imports nothing but quill-delta.
 */
import Delta from 'quill-delta';

const SURROGATE = /[\uD800-\uDFFF]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
/** The character standing in for an embed in a delta's text. */
export const EMBED = '\uFFFC';

const isHigh = (c) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c) => c >= 0xdc00 && c <= 0xdfff;

/** @param {Delta | import('quill-delta').Op[]} d */
const opsOf = (d) => (Array.isArray(d) ? d : d.ops);

/** Whether a string contains any surrogate (i.e. any character outside the BMP). */
export function hasSurrogates(text) {
  return SURROGATE.test(text);
}

/** Number of code points in a string. */
export function codePointLength(text) {
  if (!SURROGATE.test(text)) return text.length;
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    if (!(isLow(text.charCodeAt(i)) && i > 0 && isHigh(text.charCodeAt(i - 1)))) n++;
  }
  return n;
}

/**
 * The UTF-16 index reached by walking `count` code points of `text` from
 * UTF-16 index `from`. Past the end of the text each code point counts 1.
 */
function advance(text, from, count) {
  let u = from;
  const end = text.length;
  for (let i = 0; i < count; i++) {
    if (u < end - 1 && isHigh(text.charCodeAt(u)) && isLow(text.charCodeAt(u + 1))) u += 2;
    else u += 1;
  }
  return u;
}

/** Code points in text[from, to), counting a pair cut by `from` as outside. */
function countCodePoints(text, from, to) {
  let n = 0;
  for (let u = from; u < to; u++) {
    const c = text.charCodeAt(u);
    if (!(isLow(c) && u > from && isHigh(text.charCodeAt(u - 1)))) n++;
  }
  return n;
}

/** Whether UTF-16 index `u` falls between the two halves of a surrogate pair. */
function splitsPair(text, u) {
  return u > 0 && u < text.length && isLow(text.charCodeAt(u)) && isHigh(text.charCodeAt(u - 1));
}

/**
 * A delta counted in code points → the same delta counted in UTF-16 units.
 * @param {Delta | import('quill-delta').Op[]} delta  counted in code points
 * @param {string} text  the document's text before the delta (see `textOf`)
 * @param {SurrogateIndex | null} [index]  of `text`, if kept
 * @returns {Delta}
 */
export function toUtf16(delta, text, index = null) {
  const ops = opsOf(delta);
  if (index ? index.size === 0 : !SURROGATE.test(text)) return new Delta(ops);
  const out = new Delta();
  let u = 0;
  for (const op of ops) {
    if (op.insert !== undefined) {
      out.push(op);
    } else if (typeof op.retain === 'object') {
      out.push(op);
      u += 1;
    } else {
      const n = /** @type {number} */ (op.retain ?? op.delete);
      const next = index ? index.toUtf16(index.toCodePoints(u) + n) : advance(text, u, n);
      out.push(op.delete !== undefined ? { delete: next - u } : { ...op, retain: next - u });
      u = next;
    }
  }
  return out;
}

/**
 * A delta counted in UTF-16 units → the same delta counted in code points.
 * `exact` is false when the delta split a surrogate pair or inserted a lone
 * surrogate (replaced by U+FFFD); the result is then the nearest valid delta.
 * @param {Delta | import('quill-delta').Op[]} delta  counted in UTF-16 units
 * @param {string} text  the document's text before the delta
 * @param {SurrogateIndex | null} [index]  of `text`, if kept
 * @returns {{delta: Delta, exact: boolean}}
 */
export function toCodePoints(delta, text, index = null) {
  const ops = opsOf(delta);
  let exact = true;
  const textHas = index ? index.size > 0 : SURROGATE.test(text);
  const out = new Delta();
  let u = 0;
  for (const op of ops) {
    if (op.insert !== undefined) {
      if (typeof op.insert === 'string' && SURROGATE.test(op.insert)) {
        const clean = op.insert.replace(LONE_SURROGATE, '\uFFFD');
        if (clean !== op.insert) exact = false;
        out.push(clean === op.insert ? op : { ...op, insert: clean });
      } else {
        out.push(op);
      }
      continue;
    }
    if (typeof op.retain === 'object') {
      out.push(op);
      u += 1;
      continue;
    }
    const n = /** @type {number} */ (op.retain ?? op.delete);
    if (!textHas) {
      out.push(op);
      u += n;
      continue;
    }
    let end = u + n;
    if (index ? index.splits(end) : splitsPair(text, end)) {
      end += 1;
      exact = false;
    }
    if (end > u) {
      const to = Math.min(end, text.length);
      const inside = index ? Math.max(0, index.toCodePoints(to) - index.toCodePoints(Math.min(u, to))) : countCodePoints(text, u, to);
      const cps = inside + Math.max(0, end - text.length);
      out.push(op.delete !== undefined ? { delete: cps } : { ...op, retain: cps });
    }
    u = end;
  }
  return { delta: out, exact };
}

/**
 * A code point index into `text` → a UTF-16 index.
 * @param {string} text
 * @param {number} index
 * @param {SurrogateIndex | null} [surrogates]  of `text`, if kept
 */
export function indexToUtf16(text, index, surrogates = null) {
  if (surrogates) return surrogates.toUtf16(index);
  if (!SURROGATE.test(text)) return index;
  return advance(text, 0, index);
}

/**
 * A UTF-16 index into `text` → a code point index (an index between the
 * halves of a pair counts as after the pair).
 * @param {string} text
 * @param {number} index
 * @param {SurrogateIndex | null} [surrogates]  of `text`, if kept
 */
export function indexToCodePoints(text, index, surrogates = null) {
  if (surrogates ? surrogates.size === 0 : !SURROGATE.test(text)) return index;
  const end = (surrogates ? surrogates.splits(index) : splitsPair(text, index)) ? index + 1 : index;
  const inside = surrogates ? surrogates.toCodePoints(Math.min(end, text.length)) : countCodePoints(text, 0, Math.min(end, text.length));
  return inside + Math.max(0, end - text.length);
}

/**
 * A range `{index, length}` in code points → UTF-16 (or back with `toCodePoints`).
 * @param {string} text
 * @param {{index: number, length: number} | null} range
 * @param {SurrogateIndex | null} [surrogates]
 */
export function rangeToUtf16(text, range, surrogates = null) {
  if (!range) return null;
  const start = indexToUtf16(text, range.index, surrogates);
  return { index: start, length: indexToUtf16(text, range.index + range.length, surrogates) - start };
}

/**
 * @param {string} text
 * @param {{index: number, length: number} | null} range  in UTF-16 units
 * @param {SurrogateIndex | null} [surrogates]
 */
export function rangeToCodePoints(text, range, surrogates = null) {
  if (!range) return null;
  const start = indexToCodePoints(text, range.index, surrogates);
  return { index: start, length: indexToCodePoints(text, range.index + range.length, surrogates) - start };
}

/**
 * The text of a document delta (inserts only), one U+FFFC per embed.
 * @param {Delta | import('quill-delta').Op[]} doc
 */
export function textOf(doc) {
  let s = '';
  for (const op of opsOf(doc)) s += typeof op.insert === 'string' ? op.insert : EMBED;
  return s;
}

/**
 * Apply a delta (counted in the same units as the string: UTF-16 for a JS
 * string) to a text, ignoring attributes. Embeds become U+FFFC.
 * @param {string} text
 * @param {Delta | import('quill-delta').Op[]} delta
 */
export function applyToText(text, delta) {
  const parts = [];
  let u = 0;
  for (const op of opsOf(delta)) {
    if (op.insert !== undefined) parts.push(typeof op.insert === 'string' ? op.insert : EMBED);
    else if (op.delete !== undefined) u += op.delete;
    else {
      const n = typeof op.retain === 'number' ? op.retain : 1;
      parts.push(text.slice(u, u + n));
      u += n;
    }
  }
  parts.push(text.slice(u));
  return parts.join('');
}

/** Pairs per chunk of a `SurrogateIndex` (a chunk is split when it doubles). */
const CHUNK = 256;

/**
 * Where the surrogate pairs of a text are: the UTF-16 index of each pair's
 * high half, sorted, in chunks of up to 2 × CHUNK. A chunk stores positions
 * relative to its `offset`, so an edit shifts the chunks after it by
 * changing one number each, and the pairs in its own chunk one by one.
 *
 *   toCodePoints(u)  code points before UTF-16 index u (u not inside a pair)
 *   toUtf16(c)       the UTF-16 index of code point index c
 *   apply(delta)     follow an edit of the text (UTF-16 delta), in place
 *
 * Each costs O(chunks + CHUNK) at most; a text without pairs costs nothing.
 */
export class SurrogateIndex {
  constructor() {
    /** @type {{offset: number, items: number[]}[]} */
    this.chunks = [];
    /** How many pairs the text has. */
    this.size = 0;
  }

  /** @param {string} text */
  static of(text) {
    const index = new SurrogateIndex();
    if (!SURROGATE.test(text)) return index;
    const all = [];
    for (let u = 0; u < text.length - 1; u++) {
      if (isHigh(text.charCodeAt(u)) && isLow(text.charCodeAt(u + 1))) all.push(u++);
    }
    for (let i = 0; i < all.length; i += CHUNK) index.chunks.push({ offset: 0, items: all.slice(i, i + CHUNK) });
    index.size = all.length;
    return index;
  }

  /**
   * The first pair at or after UTF-16 index `u`: its chunk, its place in the
   * chunk, and how many pairs come before it.
   * @param {number} u
   */
  _locate(u) {
    let before = 0;
    const chunks = this.chunks;
    for (let c = 0; c < chunks.length; c++) {
      const { offset, items } = chunks[c];
      if (items[items.length - 1] + offset < u) {
        before += items.length;
        continue;
      }
      let lo = 0;
      let hi = items.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (items[mid] + offset < u) lo = mid + 1;
        else hi = mid;
      }
      return { c, i: lo, before: before + lo };
    }
    return { c: chunks.length, i: 0, before };
  }

  /** Whether UTF-16 index `u` falls between the two halves of a pair. @param {number} u */
  splits(u) {
    if (!this.size || u <= 0) return false;
    const { c, i } = this._locate(u - 1);
    if (c === this.chunks.length) return false;
    const chunk = this.chunks[c];
    return chunk.items[i] + chunk.offset === u - 1;
  }

  /** Code points in the text before UTF-16 index `u` (u not inside a pair). @param {number} u */
  toCodePoints(u) {
    return this.size ? u - this._locate(u).before : u;
  }

  /** The UTF-16 index of code point index `cp` (past the end, each counts 1). @param {number} cp */
  toUtf16(cp) {
    if (!this.size) return cp;
    let before = 0;
    for (const { offset, items } of this.chunks) {
      // pair k (counted from the start) is at code point index items[k] + offset - k
      if (items[items.length - 1] + offset - (before + items.length - 1) < cp) {
        before += items.length;
        continue;
      }
      let lo = 0;
      let hi = items.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (items[mid] + offset - (before + mid) < cp) lo = mid + 1;
        else hi = mid;
      }
      return cp + before + lo;
    }
    return cp + before;
  }

  /**
   * Follow an edit of the text: `delta` counts UTF-16 units and splits no pair.
   * @param {Delta | import('quill-delta').Op[]} delta
   * @returns {this}
   */
  apply(delta) {
    let u = 0;
    for (const op of opsOf(delta)) {
      if (op.insert !== undefined) {
        const s = typeof op.insert === 'string' ? op.insert : EMBED;
        if (this.size || SURROGATE.test(s)) this._insert(u, s);
        u += s.length;
      } else if (op.delete !== undefined) {
        if (this.size) this._remove(u, u + op.delete);
      } else {
        u += typeof op.retain === 'number' ? op.retain : 1;
      }
    }
    return this;
  }

  /**
   * Add `d` to every pair at or after `from`.
   * @param {number} from
   * @param {number} d
   */
  _shift(from, d) {
    const { c, i } = this._locate(from);
    if (c === this.chunks.length) return;
    const items = this.chunks[c].items;
    for (let j = i; j < items.length; j++) items[j] += d;
    for (let k = c + 1; k < this.chunks.length; k++) this.chunks[k].offset += d;
  }

  /** @param {number} u @param {string} s */
  _insert(u, s) {
    this._shift(u, s.length);
    const added = [];
    for (let j = 0; j < s.length - 1; j++) {
      if (isHigh(s.charCodeAt(j)) && isLow(s.charCodeAt(j + 1))) added.push(u + j++);
    }
    if (!added.length) return;
    let { c, i } = this._locate(u);
    if (c === this.chunks.length) {
      if (c === 0) this.chunks.push({ offset: 0, items: [] });
      c = this.chunks.length - 1;
      i = this.chunks[c].items.length;
    }
    const chunk = this.chunks[c];
    chunk.items.splice(i, 0, ...added.map((p) => p - chunk.offset));
    this.size += added.length;
    if (chunk.items.length > 2 * CHUNK) {
      const rest = chunk.items.splice(CHUNK);
      this.chunks.splice(c + 1, 0, { offset: chunk.offset, items: rest });
    }
  }

  /** Remove the pairs in [from, to) and move the later ones back. @param {number} from @param {number} to */
  _remove(from, to) {
    const start = this._locate(from);
    const end = this._locate(to);
    if (end.before > start.before) {
      for (let c = end.c; c >= start.c; c--) {
        if (c === this.chunks.length) continue;
        const items = this.chunks[c].items;
        const lo = c === start.c ? start.i : 0;
        const hi = c === end.c ? end.i : items.length;
        items.splice(lo, hi - lo);
        if (!items.length) this.chunks.splice(c, 1);
      }
      this.size -= end.before - start.before;
    }
    this._shift(from, from - to);
  }
}
