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

/**
 * Where a text's surrogate pairs are, kept up to date op by op, so converting an
 * index between UTF-16 units and code points costs O(log n) whatever the text's size.
 */
export class SurrogateIndex {
  constructor();
  /** How many pairs the text has. */
  size: number;
  /** The index of `text`'s pairs. */
  static of(text: string): SurrogateIndex;
  /** Whether UTF-16 index `u` falls between the two halves of a pair. */
  splits(u: number): boolean;
  /** Code points in the text before UTF-16 index `u` (u not inside a pair). */
  toCodePoints(u: number): number;
  /** The UTF-16 index of code point index `cp` (past the end, each counts 1). */
  toUtf16(cp: number): number;
  /** Follow an edit of the text: `delta` counts UTF-16 units and splits no pair. */
  apply(delta: import('quill-delta').default | import('quill-delta').Op[]): this;
}
