import test from 'node:test';
import assert from 'node:assert/strict';
import Delta from 'quill-delta';
import {
  toUtf16, toCodePoints, indexToUtf16, indexToCodePoints, codePointLength, textOf, applyToText, rangeToUtf16, SurrogateIndex,
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

test('a SurrogateIndex kept up to date edit by edit agrees with walking the text', () => {
  const rng = seeded('surrogate index');
  let text = '';
  const index = SurrogateIndex.of(text);
  for (let step = 0; step < 3000; step++) {
    // mostly keystrokes, now and then a big paste, so chunks split and empty
    const ops = rng.next() < 0.02 ? [{ retain: [...text].slice(0, rng.int([...text].length + 1)).join('').length }, { insert: '😀x𝒳'.repeat(200 + rng.int(400)) }] : randomEdit(rng, text);
    index.apply(ops);
    text = applyToText(text, ops);
    const fresh = SurrogateIndex.of(text);
    assert.equal(index.size, fresh.size, `step ${step}`);
    if (step % 50 === 0 || text.length < 200) {
      const points = codePointLength(text);
      for (let k = 0; k < 20; k++) {
        const cp = rng.int(points + 3);
        assert.equal(index.toUtf16(cp), indexToUtf16(text, cp), `cp ${cp} at step ${step}`);
        const u = indexToUtf16(text, Math.min(cp, points));
        assert.equal(index.toCodePoints(u), indexToCodePoints(text, u));
      }
      const edit = randomEdit(rng, text);
      const cps = toCodePoints(edit, text);
      assert.deepEqual(toCodePoints(edit, text, index), cps);
      assert.deepEqual(toUtf16(cps.delta, text, index), toUtf16(cps.delta, text));
    }
  }
  assert.ok(index.chunks.length > 1, `${index.chunks.length} chunks`);
});

test('ChunkedText follows edits exactly as applyToText does, across chunk boundaries', async () => {
  const { ChunkedText } = await import('../src/text.js');
  const rng = seeded('chunked text');
  let text = 'x'.repeat(9000) + '😀'.repeat(3000);
  const chunked = new ChunkedText(text);
  for (let step = 0; step < 2000; step++) {
    const ops = rng.next() < 0.05 ? [{ retain: rng.int(text.length + 1) }, { insert: 'ab'.repeat(rng.int(6000)) }] : rng.next() < 0.05 ? [{ retain: rng.int(text.length / 2) }, { delete: rng.int(text.length / 2) }] : randomEdit(rng, text);
    chunked.apply(ops);
    text = applyToText(text, ops);
    assert.equal(chunked.length, text.length, `step ${step}`);
    const u = rng.int(text.length + 1);
    assert.equal(chunked.charCodeAt(u), text.charCodeAt(u));
    if (step % 100 === 0) assert.equal(chunked.toString(), text);
  }
  assert.equal(chunked.toString(), text);
  assert.ok(chunked.chunks.every((c) => c.length > 0 && c.length <= 8192));
});
