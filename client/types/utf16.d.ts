// Types of '@tandem/client/utf16' (src/utf16.js): code points ⇄ UTF-16 at the editor's edge.
export {
  applyToText,
  codePointLength,
  indexToCodePoints,
  indexToUtf16,
  rangeToCodePoints,
  rangeToUtf16,
  textOf,
  toCodePoints,
  toUtf16,
} from '../index.js';

/** The one-unit stand-in for an embed (image, formula) in a document's text. */
export const EMBED: string;
/** Whether `text` holds any UTF-16 surrogate (a character above U+FFFF). */
export function hasSurrogates(text: string): boolean;
