/**
 * The fingerprint of a document, sent with a re-join's version (`h`) so that
 * the server answers with a catch-up only when its own document at that
 * version is the same (docs/protocol.md, "Re-joining from another history").
 *
 * The first 32 hex digits of SHA-256 over the document's canonical delta of
 * inserts as compact JSON with object keys sorted, UTF-8: the same digest as
 * `tandem.ot.Document.fingerprint()` in Python.
 */
import { digest } from 'lib0/hash/sha256';

/** @param {unknown} value JSON with every object's keys in sorted order */
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).filter((k) => /** @type {any} */ (value)[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(/** @type {any} */ (value)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * @param {{ops: any[]}} document a delta of inserts (the confirmed document)
 * @returns {string}
 */
export function fingerprint(document) {
  const bytes = digest(new TextEncoder().encode(canonical(document.ops)));
  let hex = '';
  for (const byte of bytes.subarray(0, 16)) hex += byte.toString(16).padStart(2, '0');
  return hex;
}
