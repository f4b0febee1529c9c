/**
 * Where a client keeps what must survive a disconnect or a page reload: each
 * document's last server version and content, its unacknowledged edits and
 * its next `seq` — keyed by client id and document id, since resubmitted ops
 * are recognised by `(client, seq)`.
 *
 * `IndexedDBStorage` in a browser, `MemoryStorage` elsewhere (Node: survives
 * reconnects, not restarts). `defaultStorage()` picks one.
 */

/**
 * @typedef {object} DocRecord
 * @property {number} version
 * @property {string | null} [incarnation]  the incarnation `version` belongs to: a
 *   re-join sends it, and a restored document (another incarnation) answers
 *   with a snapshot that the unacknowledged edits are rebased onto
 * @property {import('quill-delta').Op[]} content  the document at `version`
 * @property {ReturnType<import('./state.js').ClientState['toJSON']>} state
 */

/** An in-memory store (the fallback outside browsers). */
export class MemoryStorage {
  constructor() {
    /** @type {Map<string, DocRecord>} */
    this.records = new Map();
  }

  /** @param {string} clientId @param {string} docId @returns {Promise<DocRecord | null>} */
  async load(clientId, docId) {
    const r = this.records.get(`${clientId}\u0000${docId}`);
    return r ? structuredClone(r) : null;
  }

  /** @param {string} clientId @param {string} docId @param {DocRecord} record */
  async save(clientId, docId, record) {
    this.records.set(`${clientId}\u0000${docId}`, structuredClone(record));
  }

  /** @param {string} clientId @param {string} docId */
  async remove(clientId, docId) {
    this.records.delete(`${clientId}\u0000${docId}`);
  }
}

/** IndexedDB: one object store, key `[clientId, docId]`. */
export class IndexedDBStorage {
  /** @param {string} [name] database name */
  constructor(name = 'tandem') {
    /** @type {Promise<IDBDatabase>} */
    this.db = new Promise((resolve, reject) => {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore('docs');
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }

  /**
   * @template T
   * @param {IDBTransactionMode} mode
   * @param {(store: IDBObjectStore) => IDBRequest} action
   * @returns {Promise<T>}
   */
  async run(mode, action) {
    const db = await this.db;
    return new Promise((resolve, reject) => {
      const tx = db.transaction('docs', mode);
      const req = action(tx.objectStore('docs'));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }

  /** @param {string} clientId @param {string} docId @returns {Promise<DocRecord | null>} */
  async load(clientId, docId) {
    return (await this.run('readonly', (s) => s.get([clientId, docId]))) ?? null;
  }

  /** @param {string} clientId @param {string} docId @param {DocRecord} record */
  async save(clientId, docId, record) {
    await this.run('readwrite', (s) => s.put(record, [clientId, docId]));
  }

  /** @param {string} clientId @param {string} docId */
  async remove(clientId, docId) {
    await this.run('readwrite', (s) => s.delete([clientId, docId]));
  }
}

/** IndexedDB where there is one, else memory. */
export function defaultStorage() {
  return typeof indexedDB !== 'undefined' ? new IndexedDBStorage() : new MemoryStorage();
}

/** A fresh client id: `c-` and 16 random base-36 characters. */
export function newClientId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return 'c-' + Array.from(bytes, (b) => (b % 36).toString(36)).join('');
}

/**
 * A client id that persists across page reloads but is never used by two
 * tabs at once: the browser keeps a list of ids in localStorage and each tab
 * takes the first one no other tab holds (a Web Lock held for the tab's
 * life). A tab reloaded while offline thus gets its id back, and with it the
 * edits it had not sent. Outside browsers: a fresh id.
 * @returns {Promise<string>}
 */
export async function acquireClientId() {
  const g = /** @type {any} */ (globalThis);
  if (!g.localStorage || !g.navigator?.locks) return newClientId();
  const key = 'tandem:client-ids';
  /** @type {string[]} */
  let ids;
  try {
    ids = JSON.parse(g.localStorage.getItem(key) || '[]');
  } catch {
    ids = [];
  }
  for (const id of ids) {
    if (await holdLock(`tandem:client:${id}`)) return id;
  }
  const id = newClientId();
  await holdLock(`tandem:client:${id}`);
  // Re-read: another tab may have added an id meanwhile.
  const now = JSON.parse(g.localStorage.getItem(key) || '[]');
  g.localStorage.setItem(key, JSON.stringify([...now, id]));
  return id;
}

/** Take a Web Lock if free and hold it until the page goes away. */
function holdLock(name) {
  return new Promise((resolve) => {
    /** @type {any} */ (navigator).locks.request(name, { ifAvailable: true }, (/** @type {any} */ lock) => {
      resolve(Boolean(lock));
      return lock ? new Promise(() => {}) : undefined;
    });
  });
}
