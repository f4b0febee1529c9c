import test from 'node:test';
import assert from 'node:assert/strict';
import Delta from 'quill-delta';
import { diffText } from '../src/bindings/textarea.js';
import { editorToDoc } from '../src/bindings/quill.js';
import { applyToText } from '../src/utf16.js';

test('diffText finds the edit, using the caret for repeated characters', () => {
  assert.deepEqual(diffText('abc', 'abXc', 3), [{ retain: 2 }, { insert: 'X' }]);
  assert.deepEqual(diffText('aaa', 'aaaa', 1), [{ retain: 0 }, { insert: 'a' }].filter((o) => o.retain !== 0));
  assert.deepEqual(diffText('hello', 'hlo', 1), [{ retain: 1 }, { delete: 2 }]);
  // never cuts a surrogate pair: 😀 (\uD83D\uDE00) → 😁 (\uD83D\uDE01)
  const ops = diffText('a😀b', 'a😁b', 3);
  assert.deepEqual(ops, [{ retain: 1 }, { delete: 2 }, { insert: '😁' }]);
  for (const [a, b] of [['', 'x'], ['x', ''], ['abc', 'xyz'], ['a😀😀', 'a😀']]) assert.equal(applyToText(a, diffText(a, b)), b);
});

test('editorToDoc clips Quill\'s own trailing newline, and adds it for a line format', () => {
  // document "ab", editor "ab\n"
  assert.deepEqual(editorToDoc(new Delta().retain(2).insert('c'), 2, 1), { delta: new Delta().retain(2).insert('c'), extra: 1 });
  assert.deepEqual(editorToDoc(new Delta().retain(2, { bold: true }), 2, 1).delta.ops, [{ retain: 2, attributes: { bold: true } }]);
  assert.deepEqual(editorToDoc(new Delta().retain(3), 2, 1).delta.ops, []);
  const heading = editorToDoc(new Delta().retain(2).retain(1, { header: 1 }), 2, 1);
  assert.deepEqual(heading, { delta: new Delta().retain(2).insert('\n', { header: 1 }), extra: 0 });
  // document "ab\n" (no extra newline): passed through
  assert.deepEqual(editorToDoc(new Delta().retain(2).retain(1, { header: 2 }), 3, 0).delta.ops, [{ retain: 2 }, { retain: 1, attributes: { header: 2 } }]);
});
