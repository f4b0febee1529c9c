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
 * one character (U+FFFC, see `textOf`).
 *
 * A UTF-16 boundary inside a surrogate pair is never turned into a code point
 * boundary that splits a character: it is moved past the pair, and the
 * result is reported as not `exact` (the editor then holds something the
 * model cannot, and the binding re-renders the editor from the model).
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
 * @returns {Delta}
 */
export function toUtf16(delta, text) {
  const ops = opsOf(delta);
  if (!SURROGATE.test(text)) return new Delta(ops);
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
      const next = advance(text, u, n);
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
 * @returns {{delta: Delta, exact: boolean}}
 */
export function toCodePoints(delta, text) {
  const ops = opsOf(delta);
  let exact = true;
  const textHas = SURROGATE.test(text);
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
    if (splitsPair(text, end)) {
      end += 1;
      exact = false;
    }
    if (end > u) {
      const cps = countCodePoints(text, u, Math.min(end, text.length)) + Math.max(0, end - text.length);
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
 */
export function indexToUtf16(text, index) {
  if (!SURROGATE.test(text)) return index;
  return advance(text, 0, index);
}

/**
 * A UTF-16 index into `text` → a code point index (an index between the
 * halves of a pair counts as after the pair).
 * @param {string} text
 * @param {number} index
 */
export function indexToCodePoints(text, index) {
  if (!SURROGATE.test(text)) return index;
  const end = splitsPair(text, index) ? index + 1 : index;
  return countCodePoints(text, 0, Math.min(end, text.length)) + Math.max(0, end - text.length);
}

/**
 * A range `{index, length}` in code points → UTF-16 (or back with `toCodePoints`).
 * @param {string} text
 * @param {{index: number, length: number} | null} range
 */
export function rangeToUtf16(text, range) {
  if (!range) return null;
  const start = indexToUtf16(text, range.index);
  return { index: start, length: indexToUtf16(text, range.index + range.length) - start };
}

/**
 * @param {string} text
 * @param {{index: number, length: number} | null} range  in UTF-16 units
 */
export function rangeToCodePoints(text, range) {
  if (!range) return null;
  const start = indexToCodePoints(text, range.index);
  return { index: start, length: indexToCodePoints(text, range.index + range.length) - start };
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
