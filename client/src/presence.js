/**
 * Presence: who else is in a document, their state (name, colour, …) and
 * their cursor, shown in local coordinates.
 *
 * A remote cursor arrives in code points at some server version `v`. To draw
 * it, it is moved forward through the committed ops after `v` (kept in a
 * short history, in code points), converted to UTF-16 at the current
 * version, then moved through our own pending edits (an insert of ours at
 * their caret leaves their caret before it, as the server will do once it
 * commits our insert). A cursor ahead of our version is kept and shown once
 * we have caught up; one older than our history is hidden until its next
 * update.
 *
 * Pure: no I/O, no timers. Imports quill-delta types and utf16 only.
 */
import { codePointLength, rangeToUtf16 } from './utf16.js';
import { transformCursor } from './state.js';

/**
 * @typedef {{index: number, length: number}} Cursor
 * @typedef {{client: string, user: string, name: string, v: number, cursor: Cursor | null,
 *   state: Record<string, unknown>}} RemotePresence  as received (code points at `v`)
 * @typedef {{client: string, user: string, name: string, cursor: Cursor | null,
 *   state: Record<string, unknown>}} Peer  as shown (UTF-16, local document)
 * @typedef {{version: number, history: {v: number, op: import('quill-delta').Op[]}[],
 *   text: string, pending: import('quill-delta').default, index?: import('./utf16.js').SurrogateIndex}} View
 *   `history`: committed ops in code points, ascending `v`; `text`: the document
 *   at `version`; `pending`: our unacknowledged edits on top of it (UTF-16)
 */

export class PresenceTable {
  /** @param {string} self  our own client id, never listed */
  constructor(self) {
    this.self = self;
    /** @type {Map<string, RemotePresence>} */
    this.peers = new Map();
  }

  /**
   * Take in a `presence` message (or an entry of a snapshot's `presence`).
   * @param {any} msg
   * @returns {boolean} whether anything changed
   */
  receive(msg) {
    if (!msg || typeof msg.client !== 'string' || msg.client === this.self) return false;
    if (msg.left) return this.peers.delete(msg.client);
    const prev = this.peers.get(msg.client);
    this.peers.set(msg.client, {
      client: msg.client,
      user: msg.user ?? prev?.user ?? '',
      name: msg.name ?? prev?.name ?? msg.user ?? '',
      v: typeof msg.v === 'number' ? msg.v : prev?.v ?? 0,
      cursor: msg.cursor === undefined ? prev?.cursor ?? null : msg.cursor,
      state: msg.state ?? prev?.state ?? {},
    });
    return true;
  }

  /** Replace everything with a snapshot's or catchup's `presence` list. */
  reset(list) {
    this.peers.clear();
    for (const p of list ?? []) this.receive(p);
  }

  /**
   * Everyone else, with cursors in local UTF-16 coordinates.
   * @param {View} view
   * @returns {Peer[]}
   */
  list(view) {
    return [...this.peers.values()].map((p) => ({
      client: p.client,
      user: p.user,
      name: p.name,
      state: p.state,
      cursor: localCursor(p.cursor, p.v, view),
    }));
  }
}

/**
 * A cursor in code points at version `v` → local UTF-16 coordinates, or null
 * when it cannot be placed (ahead of us, or older than our history).
 * @param {Cursor | null} cursor
 * @param {number} v
 * @param {View} view
 */
export function localCursor(cursor, v, view) {
  if (!cursor || v > view.version) return null;
  let c = cursor;
  if (v < view.version) {
    const first = view.history.findIndex((h) => h.v === v + 1);
    if (first < 0) return null;
    for (const h of view.history.slice(first)) c = transformCursorCp(c, h.op);
  }
  return transformCursor(rangeToUtf16(view.text, c, view.index), view.pending, false);
}

/**
 * Move a code point cursor through a code point delta (as `transformCursor`,
 * measuring inserts in code points: quill-delta measures UTF-16).
 * A remote insert exactly at the caret leaves the caret before it.
 * @param {Cursor} cursor
 * @param {import('quill-delta').Op[]} ops
 */
export function transformCursorCp(cursor, ops) {
  const start = transformIndexCp(cursor.index, ops);
  const end = cursor.length ? transformIndexCp(cursor.index + cursor.length, ops) : start;
  return { index: start, length: Math.max(0, end - start) };
}

/**
 * quill-delta's transformPosition(index, true), counting code points.
 * @param {number} index
 * @param {import('quill-delta').Op[]} ops
 */
function transformIndexCp(index, ops) {
  let offset = 0;
  for (const op of ops) {
    if (offset > index) break;
    if (op.delete !== undefined) {
      index -= Math.min(op.delete, index - offset);
      continue;
    }
    let n;
    if (op.insert !== undefined) {
      n = typeof op.insert === 'string' ? codePointLength(op.insert) : 1;
      if (offset < index) index += n;
    } else {
      n = typeof op.retain === 'number' ? op.retain : 1;
    }
    offset += n;
  }
  return index;
}
