/**
 * A long text kept in chunks, so an edit copies one chunk, not the text.
 *
 * A JS string edit (`slice` + concatenation) copies the whole string, and a
 * string of more than 64 Ki UTF-16 units (any long emoji-heavy text, whose
 * characters take two bytes each) is allocated among V8's large objects:
 * 0.3–0.5 ms per keystroke at 100,000 characters, 25× an ASCII one. The
 * document keeps its local text here instead; `toString()` builds the string
 * once per change, when someone asks for it.
 *
 * Pure: no imports but quill-delta's types.
 */

/** A chunk is split when it grows past this many UTF-16 units. */
const MAX = 4096;
/** The character standing in for an embed (as in utf16.js). */
const EMBED = '\uFFFC';

export class ChunkedText {
  /** @param {string} [text] */
  constructor(text = '') {
    /** @type {string[]} */
    this.chunks = [];
    for (let i = 0; i < text.length; i += MAX) this.chunks.push(text.slice(i, i + MAX));
    this.length = text.length;
    /** @type {string | null} */
    this._string = text;
  }

  /** The text as one string (built once per change). */
  toString() {
    if (this._string === null) this._string = this.chunks.join('');
    return this._string;
  }

  /**
   * The UTF-16 unit at `u` (as `String.prototype.charCodeAt`).
   * @param {number} u
   */
  charCodeAt(u) {
    if (this._string !== null) return this._string.charCodeAt(u);
    for (const chunk of this.chunks) {
      if (u < chunk.length) return chunk.charCodeAt(u);
      u -= chunk.length;
    }
    return NaN;
  }

  /**
   * Apply a delta counted in UTF-16 units (attributes ignored; an embed is U+FFFC).
   * @param {import('quill-delta').default | import('quill-delta').Op[]} delta
   * @returns {this}
   */
  apply(delta) {
    let u = 0;
    for (const op of Array.isArray(delta) ? delta : delta.ops) {
      if (op.insert !== undefined) {
        const s = typeof op.insert === 'string' ? op.insert : EMBED;
        this._insert(u, s);
        u += s.length;
      } else if (op.delete !== undefined) {
        this._delete(u, op.delete);
      } else {
        u += typeof op.retain === 'number' ? op.retain : 1;
      }
    }
    return this;
  }

  /** The chunk holding unit `u` (or the end of the last one), and `u` within it. @param {number} u */
  _find(u) {
    const chunks = this.chunks;
    for (let c = 0; c < chunks.length; c++) {
      if (u <= chunks[c].length && (u < chunks[c].length || c === chunks.length - 1)) return { c, at: u };
      u -= chunks[c].length;
    }
    return { c: chunks.length, at: 0 };
  }

  /** @param {number} u @param {string} s */
  _insert(u, s) {
    if (!s) return;
    this._string = null;
    this.length += s.length;
    const { c, at } = this._find(u);
    if (c === this.chunks.length) {
      this.chunks.push(s);
    } else {
      const chunk = this.chunks[c];
      this.chunks[c] = chunk.slice(0, at) + s + chunk.slice(at);
    }
    const grown = this.chunks[c];
    if (grown.length > 2 * MAX) {
      const parts = [];
      for (let i = 0; i < grown.length; i += MAX) parts.push(grown.slice(i, i + MAX));
      this.chunks.splice(c, 1, ...parts);
    }
  }

  /** @param {number} u @param {number} n */
  _delete(u, n) {
    if (n <= 0) return;
    this._string = null;
    this.length -= n;
    let { c, at } = this._find(u);
    while (n > 0 && c < this.chunks.length) {
      const chunk = this.chunks[c];
      const take = Math.min(n, chunk.length - at);
      const rest = chunk.slice(0, at) + chunk.slice(at + take);
      n -= take;
      if (rest) {
        this.chunks[c] = rest;
        c++;
      } else {
        this.chunks.splice(c, 1);
      }
      at = 0;
    }
  }
}
