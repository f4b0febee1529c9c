/**
 * A document's past over REST (docs/protocol.md, "History"): versions,
 * changes, authorship, labels and restore, with the client's URL and token.
 *
 * `doc.history` makes one of these for a `TandemDoc`. Everything counts
 * UTF-16 units, like the rest of the document API: deltas and authorship
 * lengths are converted from the server's code points against the text of
 * the version they belong to.
 *
 * A failed request rejects with an `Error` whose `code` is the server's
 * (`ERR_HISTORY_COMPACTED` also carries `oldest`, the oldest readable version).
 */
import Delta from 'quill-delta';
import { textOf, toUtf16 } from './utf16.js';

/**
 * @typedef {{v: number, content: Delta, text: string}} Version
 * @typedef {{name: string, v: number, user: string, time: number}} Label
 */

/** `ws://host/collab` → `http://host`. @param {string} url */
export function httpBase(url) {
  const u = new URL(url);
  u.protocol = u.protocol === 'wss:' ? 'https:' : u.protocol === 'ws:' ? 'http:' : u.protocol;
  return u.origin;
}

export class DocumentHistory {
  /**
   * @param {{urls: string[], _token: string | (() => string | Promise<string>)}} client
   * @param {string} id
   * @param {{fetch?: typeof fetch}} [options]
   */
  constructor(client, id, { fetch: fetchImpl } = {}) {
    this.client = client;
    this.id = id;
    this._fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * The document at version `v` (or `{label}`; default: now).
   * @param {number | {label: string} | undefined} [at]
   * @returns {Promise<Version>}
   */
  async version(at) {
    const data = await this._call('GET', '', at === undefined ? {} : typeof at === 'number' ? { v: at } : { label: at.label });
    return { v: data.v, content: new Delta(data.content), text: data.text };
  }

  /**
   * What changed after `from` up to `to` (default: the head): one delta on
   * version `from` (UTF-16), and the users who made it.
   * @param {number} from
   * @param {number} [to]
   */
  async changes(from, to) {
    const data = await this._call('GET', '/changes', to === undefined ? { from } : { from, to });
    const base = await this.version(from);
    return { from: data.from, to: data.to, delta: toUtf16(data.delta, textOf(base.content)), users: data.users };
  }

  /**
   * Who inserted each character at version `v` (default: now), as runs with UTF-16 lengths.
   * @param {number} [v]
   * @returns {Promise<{v: number, authors: {user: string, length: number}[]}>}
   */
  async authors(v) {
    const data = await this._call('GET', '/authors', v === undefined ? {} : { v });
    const { text } = await this.version(data.v);
    const points = [...text];
    let at = 0;
    const authors = data.authors.map((/** @type {{user: string, length: number}} */ run) => {
      const units = points.slice(at, at + run.length).join('').length;
      at += run.length;
      return { user: run.user, length: units };
    });
    return { v: data.v, authors };
  }

  /**
   * Turn the head back into version `v`'s content (or `{label}`'s), as one new op by us.
   * @param {number | {label: string}} at
   * @returns {Promise<{v: number, restored: number}>}
   */
  restore(at) {
    return this._call('POST', '/restore', {}, typeof at === 'number' ? { v: at } : { label: at.label });
  }

  /** @returns {Promise<Label[]>} */
  async labels() {
    return (await this._call('GET', '/labels')).labels;
  }

  /**
   * Name version `v` (default: the head).
   * @param {string} name
   * @param {number} [v]
   * @returns {Promise<Label>}
   */
  setLabel(name, v) {
    return this._call('POST', '/labels', {}, v === undefined ? { name } : { name, v });
  }

  /** @param {string} name @returns {Promise<Label[]>} */
  async deleteLabel(name) {
    return (await this._call('DELETE', '/labels', { name })).labels;
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {Record<string, string | number>} [query]
   * @param {unknown} [body]
   */
  async _call(method, path, query = {}, body = undefined) {
    const token = typeof this.client._token === 'function' ? await this.client._token() : this.client._token;
    const url = new URL(`${httpBase(this.client.urls[0])}/api/docs/${encodeURI(this.id)}${path}`);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, String(v));
    const res = await this._fetch(url, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await res.json();
    if (!res.ok) {
      const detail = data.detail ?? data;
      const error = Object.assign(new Error(detail.message ?? `HTTP ${res.status}`), { code: detail.code, status: res.status });
      if (typeof detail.oldest === 'number') Object.assign(error, { oldest: detail.oldest });
      throw error;
    }
    return data;
  }
}
