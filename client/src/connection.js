/**
 * The connection to a Tandem server: one WebSocket to `/collab` shared by
 * every open document, with reconnection (exponential backoff with jitter,
 * cycling through `urls`), a persistent client id, heartbeats, and batch
 * frames. Decisions about ops live in document.js and state.js; this module
 * only moves messages.
 *
 * Works in browsers (global `WebSocket`; also follows the window's
 * online/offline events) and in Node (the `ws` package, loaded on demand).
 */
import { Emitter } from './emitter.js';
import { TandemDoc } from './document.js';
import { acquireClientId, defaultStorage } from './storage.js';
import { MERGE_AT } from './state.js';

/**
 * @typedef {'connecting' | 'online' | 'offline'} ClientStatus
 * @typedef {object} ClientOptions
 * @property {string[]} [urls]  WebSocket URLs of `/collab` endpoints, tried in turn
 * @property {string} [url]  a single URL
 * @property {string | (() => string | Promise<string>)} token  a JWT, or a function
 *   fetching a fresh one (called before every connection attempt); sent in the
 *   `bearer.<JWT>` WebSocket subprotocol, never in the URL
 * @property {boolean} [tokenInQuery]  opt in to sending the token as `?token=` instead
 *   (default false: URLs end up in proxy and server logs)
 * @property {string} [clientId]  a stable id (default: persisted per browser tab, random in Node)
 * @property {{load: Function, save: Function}} [storage]  offline store (default: IndexedDB or memory)
 * @property {any} [WebSocket]  a WebSocket constructor (default: the global one, or `ws`)
 * @property {{min?: number, max?: number}} [backoff]  reconnect delays in ms (default 250 … 10000)
 * @property {number} [heartbeat]  ping interval in ms (default 15000); a connection silent
 *   for two intervals is dropped
 * @property {number | null} [mergeThreshold]  send pending edits as one offline `merge` when a
 *   catch-up's ops × their components reach this (default 1000, `MERGE_AT`; null: never)
 */

export class TandemClient extends Emitter {
  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    const urls = options.urls ?? (options.url ? [options.url] : []);
    if (!urls.length) throw new TypeError('tandem: give `urls` (or `url`)');
    if (!options.token) throw new TypeError('tandem: give a `token`');
    this.urls = urls;
    this._token = options.token;
    this._tokenInQuery = options.tokenInQuery === true;
    this.storage = options.storage ?? defaultStorage();
    this._WebSocket = options.WebSocket ?? null;
    this._backoff = { min: 250, max: 10000, ...options.backoff };
    this._heartbeatMs = options.heartbeat ?? 15000;
    /** @type {number | null} see `ClientOptions.mergeThreshold` */
    this.mergeThreshold = options.mergeThreshold === undefined ? MERGE_AT : options.mergeThreshold;
    /** @type {string | null} */
    this.clientId = options.clientId ?? null;
    /** @type {ClientStatus} */
    this.status = 'connecting';
    /** The `hello` of the current connection (user, name, expires). */
    this.session = null;
    /** @type {Map<string, TandemDoc>} */
    this.docs = new Map();
    this._ws = null;
    this._online = false;
    this._attempt = 0;
    this._urlIndex = 0;
    this._generation = 0;
    this._reconnectTimer = null;
    this._heartbeatTimer = null;
    this._lastHeard = 0;
    this._manualOffline = false;
    this._closed = false;
    /** @type {Map<number, {doc: string, kind: string, seq?: number}>} */
    this._refs = new Map();
    this._nextRef = 1;
    /** Resolves with the client id once it is known. */
    this.ready = (this.clientId ? Promise.resolve(this.clientId) : acquireClientId()).then((id) => {
      this.clientId = id;
      this._connect();
      return id;
    });
    this._onBrowserOnline = () => this.reconnectNow();
    this._onBrowserOffline = () => this._drop('browser offline');
    if (typeof window !== 'undefined' && window.addEventListener) {
      window.addEventListener('online', this._onBrowserOnline);
      window.addEventListener('offline', this._onBrowserOffline);
    }
  }

  /**
   * Open a document (or get the one already open). Its content is there once
   * `doc.ready` resolves: at once from the offline record, else on the
   * server's snapshot.
   * @param {string} id
   * @param {{state?: Record<string, unknown>}} [options]  `state`: our presence state
   */
  open(id, options) {
    let doc = this.docs.get(id);
    if (!doc) {
      doc = new TandemDoc(this, id, options);
      this.docs.set(id, doc);
    }
    return doc;
  }

  /** Go offline on purpose: close the connection and stay offline until `connect()`. */
  disconnect() {
    this._manualOffline = true;
    clearTimeout(this._reconnectTimer);
    this._drop('disconnect()');
  }

  /** Come back online after `disconnect()`. */
  connect() {
    this._manualOffline = false;
    this.reconnectNow();
  }

  /** Skip the backoff wait and try to connect now (if not connected). */
  reconnectNow() {
    if (this._closed || this._manualOffline || this._ws) return;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._attempt = 0;
    this._connect();
  }

  /** Close everything for good. */
  close() {
    this._closed = true;
    clearTimeout(this._reconnectTimer);
    for (const doc of [...this.docs.values()]) doc.close();
    this._drop('close()');
    if (typeof window !== 'undefined' && window.removeEventListener) {
      window.removeEventListener('online', this._onBrowserOnline);
      window.removeEventListener('offline', this._onBrowserOffline);
    }
  }

  // ---- internals ----------------------------------------------------------

  async _connect() {
    if (this._closed || this._manualOffline || this._ws || !this.clientId) return;
    const generation = ++this._generation;
    this._ws = { pending: true }; // claimed while the token and module load
    this._setStatus('connecting');
    const url = new URL(this.urls[this._urlIndex % this.urls.length]);
    let ws;
    try {
      const token = typeof this._token === 'function' ? await this._token() : this._token;
      const WS = this._WebSocket ?? globalThis.WebSocket ?? (await loadWs());
      if (generation !== this._generation) return;
      url.searchParams.set('client', this.clientId);
      if (this._tokenInQuery) {
        url.searchParams.set('token', token);
        ws = new WS(url.toString(), ['tandem.v1']);
      } else {
        // Browsers cannot set headers on a WebSocket: the token rides in a
        // subprotocol the server reads and never echoes (it answers `tandem.v1`).
        ws = new WS(url.toString(), ['tandem.v1', `bearer.${token}`]);
      }
    } catch (err) {
      if (generation !== this._generation) return;
      this._ws = null;
      this.emit('error', { code: 'ERR_CONNECT', message: String(err) });
      return this._scheduleReconnect();
    }
    this._ws = ws;
    ws.onmessage = (/** @type {{data: any}} */ e) => {
      if (this._ws === ws) this._onFrame(e.data);
    };
    ws.onclose = (/** @type {{code: number, reason: string}} */ e) => {
      if (this._ws === ws) this._onClosed(e.code, e.reason);
    };
    ws.onerror = () => {}; // a close event follows
  }

  /** Forget the socket now (without waiting for its close event) and go offline. */
  _drop(reason) {
    const ws = this._ws;
    this._generation++;
    if (!ws) return this._setStatus(this._closed || this._manualOffline ? 'offline' : this.status);
    if (ws.close) {
      try {
        ws.close(1000, reason);
      } catch {
        /* already closing */
      }
    }
    this._onClosed(1000, reason);
  }

  _onClosed(code, reason) {
    this._ws = null;
    const wasOnline = this._online;
    this._online = false;
    clearInterval(this._heartbeatTimer);
    this._refs.clear();
    this._setStatus('offline');
    for (const doc of this.docs.values()) doc._disconnected();
    if (code === 4401) this.emit('error', { code: 'ERR_UNAUTHORIZED', message: reason || 'token refused' });
    if (!wasOnline) this._urlIndex++; // this URL did not work: try the next one
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._closed || this._manualOffline || this._reconnectTimer) return;
    const { min, max } = this._backoff;
    const ceiling = Math.min(max, min * 2 ** this._attempt++);
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._connect();
    }, delay);
  }

  _onFrame(data) {
    this._lastHeard = Date.now();
    let parsed;
    try {
      parsed = JSON.parse(typeof data === 'string' ? data : String(data));
    } catch {
      return this.emit('error', { code: 'ERR_BAD_MESSAGE', message: 'unparsable frame from the server' });
    }
    // A batch is processed in order, exactly as if its messages came one frame each.
    for (const msg of Array.isArray(parsed) ? parsed : [parsed]) {
      if (!this._ws) return; // a message of the batch dropped the connection
      this._dispatch(msg);
    }
  }

  _dispatch(msg) {
    switch (msg?.type) {
      case 'hello':
        return this._onHello(msg);
      case 'pong':
        return;
      case 'token_expiring':
        return this.emit('token_expiring', msg);
      case 'error': {
        const about = msg.ref !== undefined ? this._refs.get(msg.ref) : undefined;
        if (about) this._refs.delete(msg.ref);
        const doc = this.docs.get(about?.doc ?? msg.doc);
        if (doc) return doc._onError(msg, about ?? null);
        return this.emit('error', msg);
      }
      default: {
        if (msg?.ref !== undefined) this._refs.delete(msg.ref);
        const doc = typeof msg?.doc === 'string' ? this.docs.get(msg.doc) : undefined;
        doc?._receive(msg);
      }
    }
  }

  _onHello(msg) {
    this.session = msg;
    if (msg.client && msg.client !== this.clientId) this.clientId = msg.client;
    this._online = true;
    this._attempt = 0;
    this._lastHeard = Date.now();
    clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = setInterval(() => this._heartbeat(), this._heartbeatMs);
    this._setStatus('online');
    for (const doc of this.docs.values()) doc._connected();
  }

  _heartbeat() {
    const now = Date.now();
    if (now - this._lastHeard > 2 * this._heartbeatMs) return this._drop('no answer to pings');
    this._send({ type: 'ping' });
    for (const doc of this.docs.values()) doc._tick(now);
  }

  /**
   * Send a message if the connection is up.
   * @param {Record<string, unknown>} msg
   * @param {{doc: string, kind: string, seq?: number}} [about]  tracked through `ref`
   * @returns {boolean} whether it was sent
   */
  _send(msg, about) {
    const ws = this._ws;
    if (!this._online || !ws || ws.readyState !== 1) return false;
    if (about) {
      const ref = this._nextRef++;
      this._refs.set(ref, about);
      msg.ref = ref;
    }
    ws.send(JSON.stringify(msg));
    return true;
  }

  /** @param {TandemDoc} doc */
  _forget(doc) {
    if (this.docs.get(doc.id) === doc) this.docs.delete(doc.id);
  }

  /** @param {ClientStatus} status */
  _setStatus(status) {
    if (status !== this.status) {
      this.status = status;
      this.emit('status', status);
    }
    for (const doc of this.docs.values()) doc._updateStatus();
  }
}

/**
 * The `ws` package, for Node versions without a global WebSocket (before 22).
 * It is an optional peer dependency: browsers and Node 22+ never load it.
 */
async function loadWs() {
  try {
    return (await import('ws')).default;
  } catch (err) {
    throw new Error(`no global WebSocket here and the 'ws' package is not installed (npm install ws): ${err}`);
  }
}
