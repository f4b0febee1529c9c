/**
 * The client's OT state machine: ot.js's three states, as in docs/protocol.md.
 *
 *  Synchronized ──local──▶ AwaitingAck(inflight) ──local──▶ AwaitingAckWithBuffer(inflight, buffer)
 *       ▲                        │ ack                               │ ack: buffer becomes inflight
 *       └────────────────────────┘                                   ▼
 *                                                          AwaitingAck(buffer)
 *
 * and a fourth, Merging (docs/protocol.md, "Offline merge"): when a catch-up
 * would be costly to transform the pending edits through (`mergeCost`), the
 * in-flight op and the buffer become one `merge`; server ops are ignored until
 * its `merged` reply, and edits typed meanwhile compose into the buffer,
 * which becomes the in-flight op after the reply. As state.py does.
 *
 * Pure: no I/O, no timers, no events. Each method takes what happened and
 * returns what to do (an op to apply to the editor, an op message to send).
 * Deltas here count UTF-16 units, as quill-delta does; the op as sent on the
 * wire (code points) is made by the `encode` function given to the
 * constructor, called exactly when an op becomes the in-flight one, i.e. while
 * the document is at the op's base version. Imports nothing but quill-delta.
 */
import Delta from 'quill-delta';

/**
 * @typedef {import('quill-delta').Op[]} WireOps  a delta as sent (code points)
 * @typedef {{op: Delta, seq: number, sent: {op: WireOps, base: number} | null}} Inflight
 *   `op` is the in-flight op transformed up to the current version; `sent`
 *   is what was (or will be) submitted first: resent as is, with the same
 *   `seq` and base, after a reconnect (docs/protocol.md, "On reconnect").
 * @typedef {{v: number, seq: number, op: WireOps}} OpMessage
 * @typedef {{op: Delta, seq: number, base: number, wire: WireOps}} Merging
 *   an offline branch in flight: `op` (the in-flight op and the buffer,
 *   composed) based on version `base`; `wire` is it as sent, resent unchanged
 * @typedef {{v: number, seq: number, ops: WireOps[]}} MergeMessage
 * @typedef {(op: Delta) => WireOps} Encode
 */

/** @type {Encode} */
const identity = (op) => op.ops;

/**
 * A catch-up becomes an offline merge when its ops times the components of
 * the pending edits (`mergeCost`) reach this: the plain path transforms every
 * pending component past every missed op, and the measured break-even of the
 * two paths is n·m ≈ 100 (docs/performance.md, "Offline merge"); a composed
 * buffer has at least one component per scattered edit, so 1,000 keeps a 10×
 * margin. The same number as state.py's MERGE_AT.
 */
export const MERGE_AT = 1000;

export class ClientState {
  /**
   * @param {{version?: number, nextSeq?: number, inflight?: Inflight | null, buffer?: Delta | null,
   *   merging?: Merging | null, mergeAt?: number | null, encode?: Encode}} [init]
   *   `mergeAt`: the `mergeCost` from which a catch-up becomes a merge (null: never)
   */
  constructor({ version = 0, nextSeq = 1, inflight = null, buffer = null, merging = null, mergeAt = MERGE_AT, encode = identity } = {}) {
    /** Turns an op at the current version into its wire form. */
    this.encode = encode;
    /** The last server version applied locally. */
    this.version = version;
    /** The `seq` the next submitted op gets. */
    this.nextSeq = nextSeq;
    /** @type {Inflight | null} */
    this.inflight = inflight;
    /** @type {Delta | null} everything typed while `inflight` (or `merging`) is unacked, composed */
    this.buffer = buffer;
    /** @type {Merging | null} the offline merge in flight (then `inflight` is null) */
    this.merging = merging;
    /** @type {number | null} */
    this.mergeAt = mergeAt;
  }

  /** @returns {'synchronized' | 'awaitingAck' | 'awaitingAckWithBuffer' | 'merging'} */
  get name() {
    if (this.merging) return 'merging';
    if (!this.inflight) return 'synchronized';
    return this.buffer ? 'awaitingAckWithBuffer' : 'awaitingAck';
  }

  /** Whether some local edit is not yet acknowledged. */
  get pending() {
    return this.inflight !== null || this.merging !== null;
  }

  /**
   * A local edit, made on the local document (server version ∘ inflight ∘ buffer).
   * @param {Delta} op
   * @returns {boolean} whether the op became the in-flight one (then send `outgoing()`)
   */
  applyLocal(op) {
    if (this.inflight || this.merging) {
      this.buffer = this.buffer ? this.buffer.compose(op) : op;
      return false;
    }
    this.inflight = { op, seq: this.nextSeq++, sent: null };
    return true;
  }

  /**
   * The in-flight op as submitted (same seq, same base, every time), or null.
   * The first call fixes its wire form: the in-flight op encoded at the
   * current version, so call it only while the document is at that version.
   * @returns {OpMessage | null}
   */
  outgoing() {
    const f = this.inflight;
    if (!f) return null;
    if (!f.sent) f.sent = { op: this.encode(f.op), base: this.version };
    return { v: f.sent.base, seq: f.seq, op: f.sent.op };
  }

  /**
   * The in-flight op rebased on the current version, keeping its seq: the
   * fallback when the server can no longer transform from the original base.
   * @returns {OpMessage | null}
   */
  rebasedOutgoing() {
    if (this.inflight) this.inflight.sent = null;
    return this.outgoing();
  }

  /**
   * What transforming the pending edits past `missed` server ops costs, in
   * components: `missed` × (components of the in-flight op + of the buffer).
   * The buffer is composed, so it counts the places edited, not keystrokes.
   * @param {number} missed
   */
  mergeCost(missed) {
    const pending = (this.inflight ? this.inflight.op.ops.length : 0) + (this.buffer ? this.buffer.ops.length : 0);
    return missed * pending;
  }

  /**
   * Whether a catch-up of `missed` ops (after any ack of ours in it) should
   * become an offline merge.
   * @param {number} missed
   */
  shouldMerge(missed) {
    return this.mergeAt !== null && missed > 0 && this.pending && !this.merging && this.mergeCost(missed) >= this.mergeAt;
  }

  /**
   * The in-flight op and the buffer become one offline merge based on the
   * current version, with a new seq (the in-flight op's is retired). Call it
   * while the document is at the current version (`encode` runs now).
   */
  beginMerge() {
    const op = this.pendingDelta();
    this.merging = { op, seq: this.nextSeq++, base: this.version, wire: this.encode(op) };
    this.inflight = null;
    this.buffer = null;
  }

  /**
   * The merge in flight as sent (same seq, base and ops every time), or null.
   * @returns {MergeMessage | null}
   */
  outgoingMerge() {
    const m = this.merging;
    return m && { v: m.base, seq: m.seq, ops: [m.wire] };
  }

  /**
   * The merge was committed: `op` takes the branch's final state (version ∘
   * `merging.op`) to version `v`.
   *
   *            merged op M
   *    (buffer) ───────────▶
   *       B │              │ B' = transform(B, M, "right") = M.transform(B, true)
   *         ▼              ▼
   *            M' = transform(M, B, "left") = B.transform(M, false)
   *
   * The buffer, if any, becomes the in-flight op: send `outgoing()` once the
   * document is at `v`.
   * @param {number} v
   * @param {Delta} op
   * @returns {Delta} M', to apply to the local document
   */
  applyMerged(v, op) {
    if (!this.merging) throw new Error('merged without a merge in flight');
    let m = op;
    const buffer = this.buffer;
    if (buffer) m = buffer.transform(op, false);
    this.version = v;
    this.merging = null;
    this.buffer = null;
    if (buffer) this.applyLocal(op.transform(buffer, true));
    return m;
  }

  /**
   * How a server op that produced version `v` relates to this state.
   * @param {number} v
   * @returns {'apply' | 'duplicate' | 'gap'}
   */
  classify(v) {
    if (v <= this.version) return 'duplicate';
    return v === this.version + 1 ? 'apply' : 'gap';
  }

  /**
   * Someone else's op S, committed as version `v` (= version + 1).
   *
   *            server op S
   *    (pending) ───────────▶
   *       P │              │ P' = transform(P, S, "right") = S.transform(P, true)
   *         ▼              ▼
   *            S' = transform(S, P, "left") = P.transform(S, false)
   *
   * done for P = the in-flight op, then for P = the buffer: S's text stays
   * before ours at a tie, as the server committed it first.
   * @param {number} v
   * @param {Delta} op
   * @returns {Delta} S', to apply to the local document
   */
  applyRemote(v, op) {
    if (this.merging) return new Delta(); // ignored: the `merged` reply contains it
    if (v !== this.version + 1) throw new RangeError(`op v${v} does not follow v${this.version}`);
    let s = op;
    if (this.inflight) {
      const p = this.inflight.op;
      this.inflight.op = s.transform(p, true);
      s = p.transform(s, false);
      if (this.buffer) {
        const b = this.buffer;
        this.buffer = s.transform(b, true);
        s = b.transform(s, false);
      }
    }
    this.version = v;
    return s;
  }

  /**
   * The server committed our in-flight op as version `v` (or, when `v` is the
   * current version, found it a no-op and created no version). The buffer, if
   * any, becomes the in-flight op: send `outgoing()` once the document is
   * at `v`.
   * @param {number} v
   * @returns {Delta | null} the op as committed (null for a no-op)
   */
  applyAck(v) {
    const f = this.inflight;
    if (!f) throw new Error('ack without an op in flight');
    if (v !== this.version && v !== this.version + 1) {
      throw new RangeError(`ack v${v} does not follow v${this.version}`);
    }
    const committed = v === this.version + 1 ? f.op : null;
    this.version = v;
    this.inflight = null;
    const buffer = this.buffer;
    this.buffer = null;
    if (buffer) this.applyLocal(buffer);
    return committed;
  }

  /**
   * Forget every unacknowledged edit (after the server refused one).
   * @returns {Delta} the dropped edits composed, on top of the server version
   */
  drop() {
    const lost = this.pendingDelta();
    this.inflight = null;
    this.buffer = null;
    this.merging = null;
    return lost;
  }

  /** Everything unacknowledged, composed (on top of the server version). */
  pendingDelta() {
    const first = this.merging ? this.merging.op : this.inflight?.op;
    if (!first) return new Delta();
    return this.buffer ? first.compose(this.buffer) : first;
  }

  /** A JSON-able copy (for offline persistence). */
  toJSON() {
    const f = this.inflight;
    const m = this.merging;
    return {
      version: this.version,
      nextSeq: this.nextSeq,
      inflight: f && { op: f.op.ops, seq: f.seq, sent: f.sent && { op: f.sent.op, base: f.sent.base } },
      buffer: this.buffer ? this.buffer.ops : null,
      merging: m && { op: m.op.ops, seq: m.seq, base: m.base, wire: m.wire },
    };
  }

  /**
   * @param {ReturnType<ClientState['toJSON']>} json
   * @param {Encode} [encode]
   * @param {number | null} [mergeAt]
   */
  static fromJSON(json, encode, mergeAt = MERGE_AT) {
    const f = json.inflight;
    const m = json.merging;
    return new ClientState({
      encode,
      mergeAt,
      merging: m ? { op: new Delta(m.op), seq: m.seq, base: m.base, wire: m.wire } : null,
      version: json.version,
      nextSeq: json.nextSeq,
      inflight: f && {
        op: new Delta(f.op),
        seq: f.seq,
        sent: f.sent && { op: f.sent.op, base: f.sent.base },
      },
      buffer: json.buffer ? new Delta(json.buffer) : null,
    });
  }
}

/**
 * Move a position (or the ends of a range) through a delta.
 * `ownInsertPushes`: an insert exactly at the position pushes it along only
 * when the delta is the position owner's own edit (protocol "Presence").
 * @param {{index: number, length: number} | null} cursor
 * @param {Delta} delta
 * @param {boolean} ownInsertPushes
 */
export function transformCursor(cursor, delta, ownInsertPushes = false) {
  if (!cursor) return cursor;
  const start = delta.transformPosition(cursor.index, !ownInsertPushes);
  const end = cursor.length ? delta.transformPosition(cursor.index + cursor.length, true) : start;
  return { index: start, length: Math.max(0, end - start) };
}

/**
 * An approximate inverse of `delta` for moving positions back through it:
 * inserts become deletes and deletes inserts of the same length (the deleted
 * content does not matter for positions).
 * @param {Delta} delta
 */
export function positionInverse(delta) {
  const out = new Delta();
  for (const op of delta.ops) {
    if (op.insert !== undefined) out.delete(typeof op.insert === 'string' ? op.insert.length : 1);
    else if (op.delete !== undefined) out.insert('\u0000'.repeat(op.delete));
    else out.retain(typeof op.retain === 'number' ? op.retain : 1);
  }
  return out;
}
