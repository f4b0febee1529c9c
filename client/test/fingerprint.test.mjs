// The fingerprint a re-join sends (`h`) must be byte-for-byte the Python one:
// these digests are tandem.ot.Document.fingerprint() of the same documents
// (tests/unit/test_carryover.py pins the same values).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fingerprint } from '../src/fingerprint.js';

test('fingerprints equal the Python ones', () => {
  assert.equal(fingerprint({ ops: [] }), '4f53cda18c2baa0c0354bb5f9a3ecbe5');
  assert.equal(fingerprint({ ops: [{ insert: 'ab 😀é\n' }] }), '4ab54502cad91b722599d2bc0007e269');
  // Attribute keys in any order: the canonical JSON sorts them.
  const formatted = [{ insert: 'x', attributes: { color: 'red', bold: true } }, { insert: 'y\n' }];
  assert.equal(fingerprint({ ops: formatted }), '0e2690dbb23c91176ea6a4f49c31b427');
});
