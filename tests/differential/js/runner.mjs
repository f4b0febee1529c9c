// Runs a batch of quill-delta operations for tests/differential/test_quill_delta.py.
//
// stdin:  a JSON array of cases, each one of
//   {"fn": "compose",   "a": ops, "b": ops}              -> new Delta(a).compose(new Delta(b)).ops
//   {"fn": "transform", "a": ops, "b": ops, "priority": bool}
//                                                        -> new Delta(a).transform(new Delta(b), priority).ops
//   {"fn": "transformPosition", "a": ops, "index": n, "priority": bool}
//                                                        -> new Delta(a).transformPosition(index, priority)
//   {"fn": "invert",    "a": ops, "base": ops}            -> new Delta(a).invert(new Delta(base)).ops
// stdout: a JSON array with one result per case, in order; {"error": message} if quill throws.
import Delta from 'quill-delta';

function run(c) {
  const a = new Delta(c.a);
  switch (c.fn) {
    case 'compose':
      return a.compose(new Delta(c.b)).ops;
    case 'transform':
      return a.transform(new Delta(c.b), c.priority).ops;
    case 'transformPosition':
      return a.transformPosition(c.index, c.priority);
    case 'invert':
      return a.invert(new Delta(c.base)).ops;
    default:
      throw new Error(`unknown fn ${c.fn}`);
  }
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const cases = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const results = cases.map((c) => {
  try {
    return run(c);
  } catch (error) {
    return { error: String(error) };
  }
});
process.stdout.write(JSON.stringify(results));
