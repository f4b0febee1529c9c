import test from 'node:test';
import assert from 'node:assert/strict';
import Delta from 'quill-delta';
import {
  toUtf16, toCodePoints, indexToUtf16, indexToCodePoints, codePointLength, textOf, applyToText, rangeToUtf16,
} from '../src/utf16.js';
import { seeded, randomEdit } from './support/random.mjs';

test('code point counts become UTF-16 counts over astral characters', () => {
  const text = 'a😀b𝒳c';
  // retain "a😀" (2 code points), delete "b𝒳" (2), insert
  const cp = [{ retain: 2 }, { insert: '🎉' }, { delete: 2 }];
  assert.deepEqual(toUtf16(cp, text).ops, [{ retain: 3 }, { insert: '🎉' }, { delete: 3 }]);
  assert.deepEqual(toCodePoints(toUtf16(cp, text), text), { delta: new Delta(cp), exact: true });
});

test('BMP-only text is passed through unchanged', () => {
  const ops = [{ retain: 3, attributes: { bold: true } }, { delete: 1 }];
  assert.deepEqual(toUtf16(ops, 'abcdef').ops, ops);
  assert.deepEqual(toCodePoints(ops, 'abcdef').delta.ops, ops);
});

test('a boundary inside a surrogate pair is moved past the pair and reported', () => {
  const text = 'x😀y';
  // UTF-16: retain 2 ends between the halves of 😀
  const { delta, exact } = toCodePoints([{ retain: 2 }, { insert: 'Z' }], text);
  assert.equal(exact, false);
  assert.deepEqual(delta.ops, [{ retain: 2 }, { insert: 'Z' }]);
  // deleting half of the pair deletes all of it
  const del = toCodePoints([{ retain: 1 }, { delete: 1 }], text);
  assert.equal(del.exact, false);
  assert.deepEqual(del.delta.ops, [{ retain: 1 }, { delete: 1 }]);
  // a lone surrogate inserted becomes U+FFFD
  const lone = toCodePoints([{ insert: 'a\uD83D' }], text);
  assert.equal(lone.exact, false);
  assert.deepEqual(lone.delta.ops, [{ insert: 'a\uFFFD' }]);
});

test('positions and ranges', () => {
  const text = '😀a😀';
  assert.equal(indexToUtf16(text, 0), 0);
  assert.equal(indexToUtf16(text, 1), 2);
  assert.equal(indexToUtf16(text, 3), 5);
  assert.equal(indexToCodePoints(text, 2), 1);
  assert.equal(indexToCodePoints(text, 1), 1); // between the halves: after the pair
  assert.equal(indexToCodePoints(text, 5), 3);
  assert.deepEqual(rangeToUtf16(text, { index: 1, length: 2 }), { index: 2, length: 3 });
  assert.equal(codePointLength(text), 3);
  assert.equal(codePointLength('abc'), 3);
});

test('textOf and applyToText', () => {
  assert.equal(textOf([{ insert: 'ab' }, { insert: { image: 'x' } }, { insert: 'c', attributes: { bold: true } }]), 'ab\uFFFCc');
  assert.equal(applyToText('hello', [{ retain: 1 }, { delete: 2 }, { insert: 'XY' }, { retain: 1, attributes: { b: 1 } }]), 'hXYlo');
});

test('random edits: UTF-16 → code points → UTF-16 is the identity, and applies the same', () => {
  const rng = seeded('utf16 round trip');
  let text = 'start 😀';
  for (let i = 0; i < 2000; i++) {
    const ops = randomEdit(rng, text);
    const { delta: cp, exact } = toCodePoints(ops, text);
    assert.equal(exact, true);
    assert.deepEqual(toUtf16(cp, text).ops, new Delta(ops).ops);
    // applying the code point delta to the code point array gives the same text
    const points = [...text];
    const out = [];
    let p = 0;
    for (const op of cp.ops) {
      if (op.insert !== undefined) out.push(op.insert);
      else if (op.delete) p += op.delete;
      else { out.push(points.slice(p, p + op.retain).join('')); p += op.retain; }
    }
    out.push(points.slice(p).join(''));
    const next = applyToText(text, ops);
    assert.equal(out.join(''), next);
    text = next.length > 300 ? next.slice(0, 100).replace(/[\uD800-\uDBFF]$/, '') : next;
  }
});
