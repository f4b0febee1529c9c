/**
 * One open document: the local copy, the OT state machine around it, the
 * offline record, and presence. `TandemClient.open(id)` makes these; the
 * client owns the socket and hands each document its messages.
 *
 * Units: the public API (`submit`, `content`, `text`, cursors, `change`
 * events) counts UTF-16 units, like JS strings and quill-delta. The wire
 * counts code points; each op is converted once, where it crosses the wire
 * (utf16.js), against the text of the version it is based on.
 *
 * Copies kept:
 *   confirmed  the document at `version` (what the server has committed)
 *   local      confirmed ∘ inflight ∘ buffer (what the user sees), or
 *              confirmed ∘ merge ∘ buffer while an offline merge is in flight
 *
 * Offline merge (docs/protocol.md): a catch-up whose ops would cost
 * `mergeThreshold` or more to transform our pending edits through
 * (`ClientState.mergeCost`) is not applied; the pending edits go as one
 * `merge`, and the `merged` reply brings us from the branch's final state to
 * its version. A re-join during the merge resends it (same seq), unless the
 * catch-up (our client id and the merge's seq in it) or a snapshot's
 * `last_seq` shows it committed: then the reply is the difference between the
 * branch's final state and the server's document.
 */
import Delta from 'quill-delta';
import { Emitter } from './emitter.js';
import { ClientState, positionInverse, transformCursor } from './state.js';
import { PresenceTable } from './presence.js';
import { UndoManager } from './undo.js';
import { ChunkedText } from './text.js';
import { DocumentHistory } from './history.js';
import { SurrogateIndex, applyToText, rangeToCodePoints, textOf, toCodePoints, toUtf16 } from './utf16.js';

/** Committed ops composed together before they are composed into the confirmed document. */
const CONFIRMED_BATCH = 64;
/** Committed ops kept (in code points) to move stale remote cursors forward. */
const HISTORY = 200;
/** Own presence is sent at most this often (the server coalesces to 50 ms too). */
const PRESENCE_INTERVAL = 50;
/** Own presence is re-sent when unchanged for this long (the server expires it at 30 s). */
const PRESENCE_REFRESH = 20000;
/** Errors after which the same op is resubmitted (it was not applied). */
const RETRY = new Set(['ERR_STORAGE', 'ERR_RATE_LIMITED', 'ERR_INTERNAL']);

/**
 * @typedef {'connecting' | 'online' | 'synced' | 'offline'} DocStatus
 * @typedef {{delta: Delta, source: 'local' | 'remote' | 'undo' | 'redo', version: number, client?: string, user?: string,
 *   selection?: {index: number, length: number} | null}} ChangeEvent
 *
 * Events: `change` (ChangeEvent), `beforechange` (a remote change or an
 * undo is about to be applied: an editor binding reports any input it has
 * not reported yet), `presence` (Peer[]), `status` (DocStatus), `joined`,
 * `error`, `undostate` ({canUndo, canRedo}, when either changes).
 *
 * A `change` whose source is 'local' came from `submit` (the caller has it
 * already); 'remote', 'undo' and 'redo' changes are for the editor to apply.
 * An undo or redo change carries the `selection` to restore.
 */

export class TandemDoc extends Emitter {
  /**
   * @param {import('./connection.js').TandemClient} client
   * @param {string} id
   * @param {{state?: Record<string, unknown>}} [options]
   */
  constructor(client, id, options = {}) {
    super();
    this.client = client;
    this.id = id;
    /** @type {'read' | 'write' | null} */
    this.permission = null;
    /** @type {DocStatus} */
    this.status = 'connecting';
    /** The confirmed document is `_confirmedBase` ∘ `_confirmedDelta` (see `_confirmed`). */
    this._confirmedBase = new Delta();
    /** @type {Delta | null} committed ops not composed into `_confirmedBase` yet */
    this._confirmedDelta = null;
    this._confirmedText = new ChunkedText();
    /** Where the surrogate pairs of `_confirmedText` and `_text` are (utf16.js). */
    this._confirmedIndex = new SurrogateIndex();
    this._textIndex = new SurrogateIndex();
    /** @type {Delta | null} cache of the local document */
    this._local = new Delta();
    /** The local text, in chunks (text.js): an edit copies one chunk, not the text. */
    this._text = new ChunkedText();
    this._state = this._newState(0, 1);
    /** Our own edits, for undo() and redo() (undo.js). */
    this._undo = new UndoManager();
    this._undoState = { canUndo: false, canRedo: false };
    /** How many offline merges this document has sent. */
    this.merges = 0;
    /** @type {{v: number, op: import('quill-delta').Op[]}[]} */
    this._history = [];
    this._known = false;
    /**
     * The incarnation our version belongs to (`i` of the last snapshot or
     * catch-up; null from a server without incarnations, or before one).
     * @type {string | null}
     */
    this._incarnation = null;
    this._joined = false;
    this._joining = false;
    this._closed = false;
    this._presence = new PresenceTable('');
    /** @type {{index: number, length: number} | null} */
    this._cursor = null;
    this._presenceState = options.state ?? null;
    this._presenceStateDirty = this._presenceState !== null;
    this._presenceTimer = null;
    this._presenceSentAt = 0;
    this._retryTimer = null;
    this._retries = 0;
    this._saving = false;
    this._saveAgain = false;
    /** @type {(() => void)[]} */
    this._saveWaiters = [];
    this._loadDone = false;
    /** @type {(() => void)[]} */
    this._syncWaiters = [];
    /** @type {(() => void) | null} */
    this._resolveReady = null;
    /** Resolves once the content is known (from the offline record or the server). */
    this.ready = new Promise((resolve) => (this._resolveReady = resolve));
    this._loaded = this._load();
  }

  // ---- reading -----------------------------------------------------------

  /** The server version this copy is based on. */
  get version() {
    return this._state.version;
  }

  /** The local document (including unacknowledged edits), UTF-16. */
  get content() {
    if (!this._local) {
      const pending = this._state.pendingDelta();
      this._local = pending.ops.length ? this._confirmed.compose(pending) : this._confirmed;
    }
    return this._local;
  }

  /** The local document's text (one U+FFFC per embed). */
  get text() {
    return this._text.toString();
  }

  /** Past versions, changes, authorship, labels and restore, over REST (history.js). */
  get history() {
    this._historyApi ??= new DocumentHistory(this.client, this.id);
    return this._historyApi;
  }

  /** The local text's length in UTF-16 units: `text.length`, without building the string. */
  get length() {
    return this._text.length;
  }

  /** Whether local edits are waiting for an acknowledgement. */
  get pending() {
    return this._state.pending;
  }

  /** 'synchronized' | 'awaitingAck' | 'awaitingAckWithBuffer' | 'merging' */
  get syncState() {
    return this._state.name;
  }

  /** Resolves when every local edit made so far is acknowledged. */
  whenSynced() {
    if (!this._state.pending) return Promise.resolve();
    return new Promise((resolve) => this._syncWaiters.push(resolve));
  }

  /** Everyone else here, with cursors in local UTF-16 coordinates. */
  peers() {
    return this._presence.list({
      version: this._state.version,
      history: this._history,
      text: this._confirmedText.toString(),
      index: this._confirmedIndex,
      pending: this._state.pendingDelta(),
    });
  }

  // ---- editing -----------------------------------------------------------

  /**
   * Apply a local edit (a delta on the local document, UTF-16) and send it.
   * Works offline: the edit is kept and sent on reconnect.
   * @param {Delta | import('quill-delta').Op[]} delta
   * @returns {boolean} false when the edit split a surrogate pair and was
   *   adjusted (the caller should re-render from `content`)
   */
  submit(delta) {
    if (!this._known) throw new Error(`tandem: document ${this.id} is not loaded yet (await doc.ready)`);
    if (this.permission === 'read') throw new Error(`tandem: document ${this.id} is read-only`);
    let d = new Delta((delta instanceof Delta ? delta.ops : delta).slice());
    let consumed = 0;
    for (const op of d.ops) if (op.insert === undefined) consumed += typeof op.retain === 'object' ? 1 : op.retain ?? op.delete ?? 0;
    if (consumed > this._text.length) {
      throw new RangeError(`tandem: edit spans ${consumed} units, the document has ${this._text.length}`);
    }
    const { delta: cp, exact } = toCodePoints(d, this._text, this._textIndex);
    if (!exact) d = toUtf16(cp, this._text, this._textIndex);
    d.chop();
    if (d.ops.length === 0) return exact;
    this._undo.record(d, () => this.content, { now: Date.now(), selection: this._cursor });
    this._applyLocal(d, 'local');
    return exact;
  }

  /**
   * @param {Delta} d  a local edit, UTF-16
   * @param {'local' | 'undo' | 'redo'} source
   * @param {{index: number, length: number} | null} [selection]
   */
  _applyLocal(d, source, selection = null) {
    this._setText(d);
    this._local = null;
    if (this._state.applyLocal(d)) this._flush();
    this._persist();
    this._updateStatus();
    if (source === 'local') {
      this.emit('change', { delta: d, source, version: this._state.version });
    } else {
      const n = this._text.length;
      const at = selection && { index: Math.min(selection.index, n), length: Math.max(0, Math.min(selection.length, n - selection.index)) };
      if (at) this._cursor = at;
      this.emit('change', { delta: d, source, version: this._state.version, selection: at });
      if (at) this._schedulePresence();
    }
    this._emitUndoState();
  }

  // ---- undo --------------------------------------------------------------

  /** Whether `undo()` has a step of ours to take back. */
  get canUndo() {
    return this._undo.canUndo;
  }

  /** Whether `redo()` has an undone step to do again. */
  get canRedo() {
    return this._undo.canRedo;
  }

  /**
   * Take back our last step (consecutive typing is one step). Only our own
   * edits are undone, moved past everyone else's since: another user's text
   * is never removed, and text they deleted never comes back. Emits a
   * `change` with source 'undo' and the selection to restore.
   * @returns {boolean} whether there was something to undo
   */
  undo() {
    return this._step('undo');
  }

  /** Do again the step last undone (a new edit forgets them). @returns {boolean} */
  redo() {
    return this._step('redo');
  }

  /** @param {'undo' | 'redo'} which */
  _step(which) {
    if (!this._known || this.permission === 'read') return false;
    this.emit('beforechange'); // the editor reports typing it has not reported yet
    const step = this._undo[which](this.content, this._cursor);
    if (!step) return false;
    this._applyLocal(step.delta, which, step.selection);
    return true;
  }

  _emitUndoState() {
    const state = { canUndo: this._undo.canUndo, canRedo: this._undo.canRedo };
    if (state.canUndo === this._undoState.canUndo && state.canRedo === this._undoState.canRedo) return;
    this._undoState = state;
    this.emit('undostate', state);
  }

  /**
   * Tell the undo stacks about a change to the local document that is not ours.
   * @param {ChangeEvent} event
   */
  _emitRemote(event) {
    this._undo.transform(event.delta);
    this.emit('change', event);
    this._emitUndoState();
  }

  /** Insert `text` at `index` (UTF-16). */
  insert(index, text, attributes) {
    return this.submit(new Delta().retain(index).insert(text, attributes));
  }

  /** Delete `length` units at `index` (UTF-16). */
  delete(index, length) {
    return this.submit(new Delta().retain(index).delete(length));
  }

  /** Set attributes on a range (`null` removes one). */
  format(index, length, attributes) {
    return this.submit(new Delta().retain(index).retain(length, attributes));
  }

  /**
   * Our own cursor/selection (local UTF-16 coordinates), or null.
   * @param {{index: number, length: number} | null} cursor
   */
  setCursor(cursor) {
    this._cursor = cursor ? { index: cursor.index, length: cursor.length ?? 0 } : null;
    this._schedulePresence();
  }

  /**
   * Our presence state shown to others (e.g. `{name, color}`), ≤ 2 KiB of JSON.
   * @param {Record<string, unknown>} state
   */
  setPresenceState(state) {
    this._presenceState = state;
    this._presenceStateDirty = true;
    this._schedulePresence();
  }

  /** Leave the document (its offline record stays). */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._presenceTimer);
    clearTimeout(this._retryTimer);
    if (this._joined || this._joining) this.client._send({ type: 'leave', doc: this.id });
    this._joined = this._joining = false;
    this.client._forget(this);
  }

  // ---- internals: loading, joining ----------------------------------------

  _newState(version, nextSeq, json) {
    const encode = (/** @type {Delta} */ op) => toCodePoints(op, this._confirmedText, this._confirmedIndex).delta.ops;
    const mergeAt = this.client.mergeThreshold;
    return json ? ClientState.fromJSON(json, encode, mergeAt) : new ClientState({ version, nextSeq, encode, mergeAt });
  }

  async _load() {
    const clientId = await this.client.ready;
    this._presence.self = clientId;
    let record = null;
    try {
      record = await this.client.storage.load(clientId, this.id);
    } catch (err) {
      this.emit('error', { code: 'ERR_OFFLINE_STORE', message: String(err) });
    }
    if (this._closed) return;
    if (record && !this._known) {
      this._setConfirmed(new Delta(record.content));
      this._state = this._newState(0, 0, record.state);
      this._incarnation = typeof record.incarnation === 'string' ? record.incarnation : null;
      this._local = null;
      this._setText(textOf(this.content));
      this._known = true;
      this._emitRemote({ delta: this.content, source: 'remote', version: this.version });
      this._resolveReady?.();
    }
    this._loadDone = true;
    if (this.client._online) this._join();
  }

  /**
   * @param {Delta} content  the confirmed document
   * @param {Delta} [delta]  the edit that made it from the previous one (else the index is rebuilt)
   */
  _setConfirmed(content) {
    this._confirmedBase = content;
    this._confirmedDelta = null;
    const text = textOf(content);
    this._confirmedText = new ChunkedText(text);
    this._confirmedIndex = SurrogateIndex.of(text);
  }

  /**
   * A committed op (UTF-16) moves the confirmed document on. Composing it
   * into a long document copies the document's text (a large object when
   * it has two-byte characters), so the ops are composed with each other
   * (small) and into the document only when it is read, or every
   * CONFIRMED_BATCH components.
   * @param {Delta} op
   */
  _advanceConfirmed(op) {
    this._confirmedDelta = this._confirmedDelta ? this._confirmedDelta.compose(op) : op;
    this._confirmedText.apply(op);
    this._confirmedIndex.apply(op);
    if (this._confirmedDelta.ops.length > CONFIRMED_BATCH) void this._confirmed;
  }

  /** The document at `version` (what the server has committed). */
  get _confirmed() {
    if (this._confirmedDelta) {
      this._confirmedBase = this._confirmedBase.compose(this._confirmedDelta);
      this._confirmedDelta = null;
    }
    return this._confirmedBase;
  }

  /**
   * The local text: after an edit of it (a delta), or replaced (a string).
   * @param {Delta | string} next
   */
  _setText(next) {
    if (typeof next === 'string') {
      this._text = new ChunkedText(next);
      this._textIndex = SurrogateIndex.of(next);
    } else {
      this._text.apply(next);
      this._textIndex.apply(next);
    }
  }

  /** Called by the client when the connection is up (after `hello`). */
  _connected() {
    this._joined = this._joining = false;
    this._join();
  }

  /** Called by the client when the connection is gone. */
  _disconnected() {
    this._joined = this._joining = false;
    clearTimeout(this._retryTimer);
    if (this._presence.peers.size) {
      this._presence.reset([]);
      this.emit('presence', []);
    }
    this._updateStatus();
  }

  /** @param {{fresh?: boolean}} [opts] fresh: ask for a snapshot, not a catchup */
  _join({ fresh = false } = {}) {
    if (this._closed || this._joining || this._joined || !this.client._online) return;
    if (!this._loadDone) return; // _load() joins when done
    const msg = { type: 'join', doc: this.id };
    if (this._known && !fresh) {
      msg.v = this._state.version;
      // The history `v` counts in: another one (a restore) answers with a snapshot.
      if (this._incarnation) msg.i = this._incarnation;
    }
    this._joining = this.client._send(msg, { doc: this.id, kind: 'join' });
    this._updateStatus();
  }

  /** Leave and join again: after a gap, or to start over from a snapshot. */
  _rejoin(fresh = false) {
    if (this._joined || this._joining) this.client._send({ type: 'leave', doc: this.id });
    this._joined = this._joining = false;
    this._join({ fresh });
  }

  // ---- internals: messages ------------------------------------------------

  /** @param {any} msg a server message for this document */
  _receive(msg) {
    switch (msg.type) {
      case 'snapshot':
        return this._onSnapshot(msg);
      case 'catchup':
        return this._onCatchup(msg);
      case 'op':
        return this._onOp(msg);
      case 'ack':
        return this._onAck(msg);
      case 'merged':
        return this._onMerged(msg);
      case 'presence':
        if (this._joined && this._presence.receive(msg)) this.emit('presence', this.peers());
        return;
    }
  }

  _onSnapshot(msg) {
    const merging = this._state.merging;
    // A snapshot of another incarnation (a restore): the merge's base version
    // counts in the old history, so it is rebased below like any pending edit.
    const restored = typeof msg.i === 'string' && this._incarnation !== null && msg.i !== this._incarnation;
    if (merging && !restored) {
      // Keep the merge: complete it here if the server committed it, else resend it.
      if (typeof msg.last_seq === 'number' && msg.last_seq >= merging.seq) {
        this._finishMerge(msg.v, this._mergeFinal().diff(new Delta(msg.content)));
      }
      return this._afterJoin(msg);
    }
    this.emit('beforechange');
    const before = this.content;
    const content = new Delta(msg.content);
    let pending = null;
    if (this._known && this._state.pending) {
      // No history from our version: rebase what we have not had acked over
      // the difference between our version and the snapshot, as one op.
      let base = this._confirmed;
      pending = this._state.pendingDelta();
      const f = this._state.inflight;
      if (f && typeof msg.last_seq === 'number' && msg.last_seq >= f.seq) {
        base = base.compose(f.op); // the in-flight op was committed already
        pending = this._state.buffer ?? new Delta();
      }
      pending = base.diff(content).transform(pending, true);
    }
    const nextSeq = this._state.nextSeq;
    this._setConfirmed(content);
    this._state = this._newState(msg.v, nextSeq);
    this._history = [];
    if (pending && pending.ops.length) this._state.applyLocal(pending);
    this._local = null;
    this._setText(textOf(this.content));
    this._known = true;
    this._afterJoin(msg);
    const delta = before.diff(this.content);
    if (delta.ops.length) this._emitRemote({ delta, source: 'remote', version: this.version });
    this._resolveReady?.();
    this._persist();
  }

  _onCatchup(msg) {
    if (this._state.merging) {
      this._catchupMerging(msg.ops);
      return this._afterJoin(msg);
    }
    const entries = msg.ops.filter((/** @type {any} */ e) => e.v > this._state.version);
    const sent = this._state.inflight;
    const own = sent ? entries.findIndex((/** @type {any} */ e) => e.client === this.client.clientId && e.seq === sent.seq) : -1;
    for (const [i, entry] of entries.entries()) {
      if (i > own && this._state.shouldMerge(entries.length - i) && this._state.classify(entry.v) === 'apply') {
        this._state.beginMerge(); // the rest comes with the `merged` reply
        this.merges++;
        break;
      }
      const f = this._state.inflight;
      if (f && entry.client === this.client.clientId && entry.seq === f.seq) {
        if (this._state.classify(entry.v) !== 'apply') continue;
        this._ack(entry.v);
        continue;
      }
      const kind = this._state.classify(entry.v);
      if (kind === 'duplicate') continue;
      if (kind === 'gap') {
        this._joining = false;
        return this._rejoin(true);
      }
      this._applyRemote(entry);
    }
    this._afterJoin(msg);
  }

  /** A catch-up while merging: complete the merge if it is in there, else ignore it. */
  _catchupMerging(ops) {
    const merging = /** @type {NonNullable<ClientState['merging']>} */ (this._state.merging);
    const entries = ops.filter((/** @type {any} */ e) => e.v > this._state.version);
    if (!entries.some((/** @type {any} */ e) => e.client === this.client.clientId && e.seq === merging.seq)) return;
    let head = this._confirmed;
    let text = this._confirmedText.toString();
    for (const entry of entries) {
      const s = toUtf16(entry.op, text);
      head = head.compose(s);
      text = applyToText(text, s);
    }
    this._finishMerge(entries[entries.length - 1].v, this._mergeFinal().diff(head));
  }

  /** The branch's final state: the confirmed document with the merge applied. */
  _mergeFinal() {
    const merging = /** @type {NonNullable<ClientState['merging']>} */ (this._state.merging);
    return this._confirmed.compose(merging.op);
  }

  _onMerged(msg) {
    const merging = this._state.merging;
    if (!this._joined || !merging || msg.seq !== merging.seq) return; // a repeat, or not ours
    const finalText = applyToText(this._confirmedText.toString(), merging.op);
    this._finishMerge(msg.v, toUtf16(msg.op, finalText));
  }

  /**
   * The merge is committed: `m` (UTF-16) takes the branch's final state to version `v`.
   * @param {number} v
   * @param {Delta} m
   */
  _finishMerge(v, m) {
    this.emit('beforechange');
    const final = this._mergeFinal();
    const local = this._state.applyMerged(v, m);
    this._setConfirmed(final.compose(m));
    this._history = []; // the jump from the base to `v` is no sequence of server ops
    this._setText(local);
    this._local = null;
    if (local.ops.length) this._emitRemote({ delta: local, source: 'remote', version: v });
    this._retries = 0;
    this._flush();
    this._persist();
    this._updateStatus();
    if (!this._state.pending) {
      for (const resolve of this._syncWaiters.splice(0)) resolve();
      this._schedulePresence();
    }
  }

  _afterJoin(msg) {
    // If the server tells us the last seq it committed for us (a record lost
    // with the same client id), never reuse one: it would be acked unapplied.
    if (typeof msg.last_seq === 'number' && msg.last_seq >= this._state.nextSeq) {
      this._state.nextSeq = msg.last_seq + 1;
    }
    this._joining = false;
    this._joined = true;
    this._retries = 0;
    this._incarnation = typeof msg.i === 'string' ? msg.i : null;
    if (msg.permission) this.permission = msg.permission;
    this._presence.reset(msg.presence);
    this.emit('presence', this.peers());
    this._presenceStateDirty = this._presenceState !== null;
    this._sendPresence();
    this._flush();
    this._persist();
    this._updateStatus();
    this.emit('joined', { version: this.version, permission: this.permission });
  }

  _onOp(msg) {
    if (!this._joined || this._state.merging) return; // while merging: in the `merged` reply
    const f = this._state.inflight;
    if (f && msg.client === this.client.clientId && msg.seq === f.seq) return this._onAck(msg);
    const kind = this._state.classify(msg.v);
    if (kind === 'duplicate') return;
    if (kind === 'gap') return this._rejoin();
    this._applyRemote(msg);
    this._persist();
  }

  /** @param {{v: number, op: any[], client?: string, user?: string}} entry */
  _applyRemote(entry) {
    this.emit('beforechange'); // editors flush input they have not reported yet
    const s = toUtf16(entry.op, this._confirmedText, this._confirmedIndex);
    const local = this._state.applyRemote(entry.v, s);
    this._advanceConfirmed(s);
    this._remember(entry.v, entry.op);
    this._setText(local);
    this._local = null;
    this._emitRemote({ delta: local, source: 'remote', version: entry.v, client: entry.client, user: entry.user });
  }

  _onAck(msg) {
    if (!this._joined) return;
    const f = this._state.inflight;
    if (!f || msg.seq !== f.seq) return;
    if (msg.v > this._state.version + 1) return this._rejoin(); // missed ops: the catchup acks it
    if (msg.v < this._state.version) return; // a repeated ack
    this._ack(msg.v);
  }

  _ack(v) {
    const f = /** @type {NonNullable<ClientState['inflight']>} */ (this._state.inflight);
    const wire = f.op;
    const committed = this._state.applyAck(v);
    if (committed) {
      this._remember(v, toCodePoints(wire, this._confirmedText, this._confirmedIndex).delta.ops);
      this._advanceConfirmed(committed);
    }
    this._local = null;
    this._retries = 0;
    if (this._joined) this._flush();
    this._persist();
    this._updateStatus();
    if (!this._state.pending) {
      for (const resolve of this._syncWaiters.splice(0)) resolve();
      this._schedulePresence();
    }
  }

  _remember(v, op) {
    this._history.push({ v, op });
    if (this._history.length > HISTORY) this._history.splice(0, this._history.length - HISTORY);
  }

  /**
   * @param {any} msg an error
   * @param {{doc: string, kind: string, seq?: number} | null} about what it answers (from `ref`)
   */
  _onError(msg, about) {
    const f = this._state.merging ?? this._state.inflight;
    const aboutOp = about ? about.kind === 'op' || about.kind === 'merge' : msg.seq !== undefined && msg.seq !== null;
    if (about?.kind === 'join' || (!aboutOp && !this._joined)) {
      this._joining = false;
      if (msg.code === 'ERR_HISTORY_PRUNED') return this._join({ fresh: true });
      this.emit('error', msg);
      return this._updateStatus();
    }
    const seq = about?.seq ?? msg.seq;
    if (!aboutOp || !f || seq !== f.seq) return this.emit('error', msg);
    if (RETRY.has(msg.code)) {
      const delay = Math.min(5000, 100 * 2 ** this._retries++) * (0.5 + Math.random() / 2);
      clearTimeout(this._retryTimer);
      this._retryTimer = setTimeout(() => this._flush(), delay);
      return;
    }
    if (msg.code === 'ERR_HISTORY_PRUNED' && !this._state.merging) return this._flush(true);
    if (msg.code === 'ERR_NOT_JOINED') return this._rejoin();
    // Refused: the op (and what was typed on top of it) cannot be applied.
    // Back to the server's version, then start over from a snapshot.
    this.emit('beforechange');
    const lost = this._state.drop();
    const before = this.content;
    this._local = null;
    this._setText(this._confirmedText.toString());
    const undo = before.diff(this.content);
    if (undo.ops.length) this._emitRemote({ delta: undo, source: 'remote', version: this.version });
    for (const resolve of this._syncWaiters.splice(0)) resolve();
    this.emit('error', { ...msg, lost });
    this._persist();
    this._rejoin(true);
  }

  /** Send the in-flight op (as first submitted, or rebased on the current version). */
  _flush(rebase = false) {
    if (!this._joined) return;
    const merge = this._state.outgoingMerge();
    if (merge) {
      this.client._send({ type: 'merge', doc: this.id, ...merge }, { doc: this.id, kind: 'merge', seq: merge.seq });
      return;
    }
    const out = rebase ? this._state.rebasedOutgoing() : this._state.outgoing();
    if (!out) return;
    this.client._send({ type: 'op', doc: this.id, v: out.v, seq: out.seq, op: out.op }, { doc: this.id, kind: 'op', seq: out.seq });
  }

  // ---- internals: presence, persistence, status ---------------------------

  _schedulePresence() {
    if (this._presenceTimer || !this._joined) return;
    const wait = Math.max(0, this._presenceSentAt + PRESENCE_INTERVAL - Date.now());
    this._presenceTimer = setTimeout(() => {
      this._presenceTimer = null;
      this._sendPresence();
    }, wait);
  }

  _sendPresence() {
    if (!this._joined) return;
    // Our cursor is in local coordinates; express it at `version` by moving
    // it back through our pending edits.
    const pending = this._state.pendingDelta();
    const atVersion = this._cursor && pending.ops.length ? transformCursor(this._cursor, positionInverse(pending), false) : this._cursor;
    const msg = { type: 'presence', doc: this.id, v: this._state.version, cursor: rangeToCodePoints(this._confirmedText, atVersion, this._confirmedIndex) };
    if (this._presenceStateDirty && this._presenceState) msg.state = this._presenceState;
    this._presenceStateDirty = false;
    this._presenceSentAt = Date.now();
    this.client._send(msg);
  }

  /** Called on the client's heartbeat: keep our presence from expiring. */
  _tick(now) {
    if (this._joined && now - this._presenceSentAt > PRESENCE_REFRESH) this._sendPresence();
  }

  _persist() {
    if (!this._known || !this.client.clientId) return;
    if (this._saving) {
      this._saveAgain = true;
      return;
    }
    this._saving = true;
    const record = {
      version: this._state.version,
      incarnation: this._incarnation,
      content: this._confirmed.ops,
      state: this._state.toJSON(),
    };
    this.client.storage
      .save(this.client.clientId, this.id, record)
      .catch((err) => this.emit('error', { code: 'ERR_OFFLINE_STORE', message: String(err) }))
      .finally(() => {
        this._saving = false;
        if (this._saveAgain) {
          this._saveAgain = false;
          this._persist();
        } else {
          for (const resolve of this._saveWaiters.splice(0)) resolve();
        }
      });
  }

  /** Resolves once the offline record reflects every edit made so far. */
  whenSaved() {
    if (!this._saving) return Promise.resolve();
    return new Promise((resolve) => this._saveWaiters.push(resolve));
  }

  _updateStatus() {
    /** @type {DocStatus} */
    let status;
    if (!this.client._online) status = this.client.status === 'connecting' ? 'connecting' : 'offline';
    else if (!this._joined) status = 'connecting';
    else status = this._state.pending ? 'online' : 'synced';
    if (status !== this.status) {
      this.status = status;
      this.emit('status', status);
    }
  }
}
