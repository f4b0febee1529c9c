// Hand-written declarations for @tandem/client (the package is plain ES
// modules with JSDoc; dist/tandem-client.js is the same API bundled for
// browsers without a bundler). Each subpath has its own file in types/;
// test/package.test.mjs checks that every value declared here exists at run
// time and that nothing exported at run time is left undeclared.
import * as QuillDelta from 'quill-delta';

// quill-delta is CommonJS (`module.exports = Delta; module.exports.default = Delta`):
// for "nodenext" resolution its default import is the whole module, for "bundler"
// the class. So the instance type comes through the namespace (the same under
// both), and the constructor, which the client re-exports, is declared here.
/** quill-delta's Delta: the client's op and document type (`new Delta().insert('x')`). */
type Delta = QuillDelta.default;
declare const Delta: {
  new (ops?: QuillDelta.Op[] | { ops: QuillDelta.Op[] }): QuillDelta.default;
  readonly prototype: QuillDelta.default;
};
type Op = QuillDelta.Op;

export { Delta, Op };

/** A cursor or selection. In the public API: UTF-16 units of the local document. */
export interface Cursor {
  index: number;
  length: number;
}

type Listener<T> = (arg: T) => void;

export class Emitter {
  on(event: string, listener: Listener<any>): () => void;
  off(event: string, listener: Listener<any>): void;
  once(event: string, test?: (arg: any) => boolean): Promise<any>;
  emit(event: string, arg?: unknown): void;
}

// ---- storage ------------------------------------------------------------------

export interface DocRecord {
  version: number;
  /** The incarnation `version` belongs to (sent with it on re-join); null before incarnations. */
  incarnation?: string | null;
  /** The document at `version` (a delta of inserts). */
  content: Op[];
  state: ClientStateJSON;
}

export interface OfflineStorage {
  load(clientId: string, docId: string): Promise<DocRecord | null>;
  save(clientId: string, docId: string, record: DocRecord): Promise<void>;
  remove?(clientId: string, docId: string): Promise<void>;
}

export class MemoryStorage implements OfflineStorage {
  load(clientId: string, docId: string): Promise<DocRecord | null>;
  save(clientId: string, docId: string, record: DocRecord): Promise<void>;
  remove(clientId: string, docId: string): Promise<void>;
}

export class IndexedDBStorage implements OfflineStorage {
  constructor(name?: string);
  load(clientId: string, docId: string): Promise<DocRecord | null>;
  save(clientId: string, docId: string, record: DocRecord): Promise<void>;
  remove(clientId: string, docId: string): Promise<void>;
}

/** IndexedDB in a browser, memory elsewhere. */
export function defaultStorage(): OfflineStorage;
/** A client id kept across reloads, never shared by two tabs (Web Locks); random outside browsers. */
export function acquireClientId(): Promise<string>;
export function newClientId(): string;

// ---- the connection -------------------------------------------------------------

export type ClientStatus = 'connecting' | 'online' | 'offline';
export type DocStatus = 'connecting' | 'online' | 'synced' | 'offline';

export interface ClientOptions {
  /** `ws(s)://host:port/collab` endpoints, tried in turn when one fails. */
  urls?: string[];
  url?: string;
  /**
   * A JWT, or a function returning a fresh one (called before every connection attempt).
   * Sent in the `bearer.<JWT>` WebSocket subprotocol, never in the URL.
   */
  token: string | (() => string | Promise<string>);
  /** Opt in to sending the token as `?token=` (for servers behind a proxy that drops subprotocols); default false. */
  tokenInQuery?: boolean;
  /** A stable client id; default: persisted per browser tab, random in Node. */
  clientId?: string;
  /** Where unsent edits and the last known document are kept; default IndexedDB or memory. */
  storage?: OfflineStorage;
  /** A WebSocket constructor; default the global one, else the `ws` package. */
  WebSocket?: unknown;
  /** Reconnect delays in ms: exponential from `min` to `max`, with jitter. Default 250 … 10000. */
  backoff?: { min?: number; max?: number };
  /** Ping interval in ms (default 15000); a connection silent for two intervals is dropped. */
  heartbeat?: number;
  /**
   * Send the pending edits as one offline `merge` (docs/protocol.md, "Offline merge") when a
   * catch-up's ops × the components of the pending edits reach this. Default `MERGE_AT` (1000);
   * null: never.
   */
  mergeThreshold?: number | null;
}

export interface Hello {
  type: 'hello';
  protocol: number;
  client: string;
  user: string;
  name: string;
  expires: number;
}

export interface TandemError {
  type?: 'error';
  code: string;
  message: string;
  doc?: string;
  seq?: number;
  ref?: string | number;
  /** For a refused edit: what was dropped (on top of the server version). */
  lost?: Delta;
  /** With ERR_REJECTED / ERR_AUTHORIZE_FAILED: the server's authorize hook's code and reason. */
  rejection?: { code: string; reason: string };
}

export class TandemClient extends Emitter {
  constructor(options: ClientOptions);
  readonly urls: string[];
  readonly storage: OfflineStorage;
  /** Known once `ready` resolves. */
  clientId: string | null;
  status: ClientStatus;
  /** The `hello` of the current connection. */
  session: Hello | null;
  readonly docs: Map<string, TandemDoc>;
  /** Resolves with the client id. */
  readonly ready: Promise<string>;
  /** Open a document (or get the one already open). `state`: our presence state, e.g. `{name, color}`. */
  open(id: string, options?: { state?: Record<string, unknown> }): TandemDoc;
  /** Go offline on purpose; stays offline until `connect()`. Edits keep working locally. */
  disconnect(): void;
  connect(): void;
  /** Skip the backoff wait and connect now. */
  reconnectNow(): void;
  close(): void;
  on(event: 'status', listener: Listener<ClientStatus>): () => void;
  on(event: 'error', listener: Listener<TandemError>): () => void;
  on(event: 'token_expiring', listener: Listener<{ type: 'token_expiring'; expires: number }>): () => void;
  on(event: string, listener: Listener<any>): () => void;
}

export interface ChangeEvent {
  /** The change to the local document, UTF-16 units. */
  delta: Delta;
  /**
   * 'local': made by `submit` (the caller has it already); 'remote': someone
   * else's; 'undo' / 'redo': made by `undo()` / `redo()` (apply it to the
   * editor, then restore `selection`).
   */
  source: 'local' | 'remote' | 'undo' | 'redo';
  version: number;
  client?: string;
  user?: string;
  /** For 'undo' and 'redo': the selection to restore (UTF-16). */
  selection?: Cursor | null;
}

export interface UndoState {
  canUndo: boolean;
  canRedo: boolean;
}

export interface Peer {
  client: string;
  user: string;
  name: string;
  state: Record<string, unknown>;
  /** In local UTF-16 coordinates (moved through our pending edits), or null. */
  cursor: Cursor | null;
}

export class TandemDoc extends Emitter {
  readonly client: TandemClient;
  readonly id: string;
  permission: 'read' | 'write' | null;
  status: DocStatus;
  /** Resolves once the content is known: from the offline record, or the server's snapshot. */
  readonly ready: Promise<void>;
  /** The server version this copy is based on. */
  readonly version: number;
  /** The local document, including edits not acknowledged yet (UTF-16). */
  readonly content: Delta;
  /** Its text (one U+FFFC per embed). */
  readonly text: string;
  /** `text.length`, without building the string (the text is kept in chunks). */
  readonly length: number;
  /** Past versions, changes, authorship, labels and restore, over REST. */
  readonly history: DocumentHistory;
  readonly pending: boolean;
  readonly syncState: 'synchronized' | 'awaitingAck' | 'awaitingAckWithBuffer' | 'merging';
  /** How many offline merges this document has sent. */
  readonly merges: number;
  /** Resolves when every local edit made so far is acknowledged by the server. */
  whenSynced(): Promise<void>;
  /** Resolves when the offline record holds every edit made so far. */
  whenSaved(): Promise<void>;
  /** Everyone else here. */
  peers(): Peer[];
  /**
   * A local edit on the local document (UTF-16 units). Works offline.
   * Returns false if it split a surrogate pair and was adjusted (re-render from `content`).
   */
  submit(delta: Delta | Op[]): boolean;
  insert(index: number, text: string, attributes?: Record<string, unknown>): boolean;
  delete(index: number, length: number): boolean;
  format(index: number, length: number, attributes: Record<string, unknown>): boolean;
  setCursor(cursor: Cursor | null): void;
  setPresenceState(state: Record<string, unknown>): void;
  /** Whether `undo()` has a step of ours to take back. */
  readonly canUndo: boolean;
  /** Whether `redo()` has an undone step to do again. */
  readonly canRedo: boolean;
  /**
   * Take back our last step (consecutive typing: a word, or up to a 500 ms
   * pause). Only our own edits, moved past everyone else's since: never
   * removes another user's text, never brings back text they deleted. Emits
   * a `change` with source 'undo' and the selection to restore.
   */
  undo(): boolean;
  /** Do again the step last undone; a new edit forgets them. */
  redo(): boolean;
  close(): void;
  on(event: 'change', listener: Listener<ChangeEvent>): () => void;
  on(event: 'undostate', listener: Listener<UndoState>): () => void;
  on(event: 'beforechange', listener: Listener<void>): () => void;
  on(event: 'presence', listener: Listener<Peer[]>): () => void;
  on(event: 'status', listener: Listener<DocStatus>): () => void;
  on(event: 'joined', listener: Listener<{ version: number; permission: 'read' | 'write' | null }>): () => void;
  on(event: 'error', listener: Listener<TandemError>): () => void;
  on(event: string, listener: Listener<any>): () => void;
}

// ---- the state machine (pure) ------------------------------------------------------

export interface OpMessage {
  v: number;
  seq: number;
  op: Op[];
}

export interface Inflight {
  op: Delta;
  seq: number;
  sent: { op: Op[]; base: number } | null;
}

/** An offline branch in flight: `op` (UTF-16) based on version `base`; `wire` is it as sent. */
export interface Merging {
  op: Delta;
  seq: number;
  base: number;
  wire: Op[];
}

export interface MergeMessage {
  v: number;
  seq: number;
  ops: Op[][];
}

/** The default `mergeThreshold`: a catch-up becomes a merge from this `mergeCost`. */
export const MERGE_AT: number;

export interface ClientStateJSON {
  version: number;
  nextSeq: number;
  inflight: { op: Op[]; seq: number; sent: { op: Op[]; base: number } | null } | null;
  buffer: Op[] | null;
  merging?: { op: Op[]; seq: number; base: number; wire: Op[] } | null;
}

export class ClientState {
  constructor(init?: {
    version?: number;
    nextSeq?: number;
    inflight?: Inflight | null;
    buffer?: Delta | null;
    merging?: Merging | null;
    mergeAt?: number | null;
    encode?: (op: Delta) => Op[];
  });
  version: number;
  nextSeq: number;
  inflight: Inflight | null;
  buffer: Delta | null;
  merging: Merging | null;
  mergeAt: number | null;
  readonly name: 'synchronized' | 'awaitingAck' | 'awaitingAckWithBuffer' | 'merging';
  readonly pending: boolean;
  applyLocal(op: Delta): boolean;
  outgoing(): OpMessage | null;
  rebasedOutgoing(): OpMessage | null;
  /** `missed` × (components of the in-flight op + of the buffer). */
  mergeCost(missed: number): number;
  shouldMerge(missed: number): boolean;
  beginMerge(): void;
  outgoingMerge(): MergeMessage | null;
  applyMerged(v: number, op: Delta): Delta;
  classify(v: number): 'apply' | 'duplicate' | 'gap';
  applyRemote(v: number, op: Delta): Delta;
  applyAck(v: number): Delta | null;
  drop(): Delta;
  pendingDelta(): Delta;
  toJSON(): ClientStateJSON;
  static fromJSON(json: ClientStateJSON, encode?: (op: Delta) => Op[], mergeAt?: number | null): ClientState;
}

export function transformCursor(cursor: Cursor | null, delta: Delta, ownInsertPushes?: boolean): Cursor | null;
export function positionInverse(delta: Delta): Delta;

export class PresenceTable {
  constructor(self: string);
  receive(msg: unknown): boolean;
  reset(list: unknown[] | undefined): void;
  list(view: { version: number; history: { v: number; op: Op[] }[]; text: string; pending: Delta }): Peer[];
}
export function localCursor(cursor: Cursor | null, v: number, view: { version: number; history: { v: number; op: Op[] }[]; text: string; pending: Delta }): Cursor | null;

// ---- code points ⇄ UTF-16 -----------------------------------------------------------

/**
 * The optional last argument is the text's `SurrogateIndex` ('@tandem/client/utf16'):
 * given it, the conversions ask it instead of walking the text (and `text`
 * only needs its `length`).
 */
export function toUtf16(delta: Delta | Op[], text: string | { length: number }, index?: import('./types/utf16.js').SurrogateIndex | null): Delta;
export function toCodePoints(delta: Delta | Op[], text: string | { length: number }, index?: import('./types/utf16.js').SurrogateIndex | null): { delta: Delta; exact: boolean };
export function indexToUtf16(text: string, index: number, surrogates?: import('./types/utf16.js').SurrogateIndex | null): number;
export function indexToCodePoints(text: string, index: number, surrogates?: import('./types/utf16.js').SurrogateIndex | null): number;
export function rangeToUtf16(text: string, range: Cursor | null, surrogates?: import('./types/utf16.js').SurrogateIndex | null): Cursor | null;
export function rangeToCodePoints(text: string, range: Cursor | null, surrogates?: import('./types/utf16.js').SurrogateIndex | null): Cursor | null;
export function codePointLength(text: string): number;
export function textOf(doc: Delta | Op[]): string;
export function applyToText(text: string, delta: Delta | Op[]): string;

// ---- history (REST) ----------------------------------------------------------------

export interface HistoryLabel {
  name: string;
  v: number;
  user: string;
  time: number;
}
/** A failed history request: the server's `code`, and `oldest` for ERR_HISTORY_COMPACTED. */
export interface HistoryError extends Error {
  code: string;
  status: number;
  oldest?: number;
}
/** `ws://host/collab` → `http://host`. */
export function httpBase(url: string): string;
/** A document's past over REST (docs/protocol.md, "History"); UTF-16 units throughout. */
export class DocumentHistory {
  constructor(client: TandemClient, id: string, options?: { fetch?: typeof fetch });
  readonly id: string;
  version(at?: number | { label: string }): Promise<{ v: number; content: Delta; text: string }>;
  changes(from: number, to?: number): Promise<{ from: number; to: number; delta: Delta; users: string[] }>;
  authors(v?: number): Promise<{ v: number; authors: { user: string; length: number }[] }>;
  restore(at: number | { label: string }): Promise<{ v: number; restored: number }>;
  labels(): Promise<HistoryLabel[]>;
  setLabel(name: string, v?: number): Promise<HistoryLabel>;
  deleteLabel(name: string): Promise<HistoryLabel[]>;
}

// ---- undo (pure) -------------------------------------------------------------------

export const GROUP_DELAY: number;
export const MAX_STACK: number;
export interface UndoStep {
  delta: Delta;
  selection: Cursor | null;
}
export interface Typing {
  kind: 'insert' | 'delete';
  start: number;
  end: number;
  text: string;
}
export function typingOf(change: Delta): Typing | null;
export function caretAfter(op: Delta): Cursor | null;
/** Undo and redo stacks of one user's edits (src/undo.js); `TandemDoc` keeps one. */
export class UndoManager {
  constructor(options?: { delay?: number; maxStack?: number });
  readonly canUndo: boolean;
  readonly canRedo: boolean;
  undoStack: { op: Delta; selection: Cursor | null }[];
  redoStack: { op: Delta; selection: Cursor | null }[];
  /** A local edit `change` made on `before` (a function is called only for deletes and formats). */
  record(change: Delta, before: Delta | (() => Delta), options?: { now?: number; selection?: Cursor | null }): void;
  /** Someone else's op, applied to the local document. */
  transform(remote: Delta): void;
  undo(doc: Delta, selection?: Cursor | null): UndoStep | null;
  redo(doc: Delta, selection?: Cursor | null): UndoStep | null;
  /** End the open typing group. */
  cut(): void;
  clear(): void;
}

// ---- editor bindings ----------------------------------------------------------------

export interface Binding {
  destroy(): void;
}

export function bindQuill(doc: TandemDoc, quill: any, options?: { cursors?: boolean }): Binding & { render(): void; overlay: CursorOverlay | null };
export function editorToDoc(change: Delta, docLength: number, extra: number): { delta: Delta; extra: number };
export function bindTextarea(doc: TandemDoc, textarea: HTMLTextAreaElement | HTMLInputElement): Binding;
export function diffText(before: string, after: string, caret?: number): Op[];

export class CursorOverlay {
  constructor(quill: any);
  render(peers: Peer[]): void;
  destroy(): void;
}
export function colorFor(key: string): string;
