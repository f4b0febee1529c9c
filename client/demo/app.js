// The Tandem demo: a shared rich-text document with presence.
// URL parameters: ?doc=ID opens a document, ?user=NAME sets who you are.
import { TandemClient, bindQuill, colorFor } from '@tandem/client';

const PALETTE = ['#e11d48', '#db2777', '#9333ea', '#4f46e5', '#0284c7', '#0d9488', '#16a34a', '#ca8a04', '#ea580c', '#64748b'];
const ADJECTIVES = ['Amber', 'Brisk', 'Calm', 'Daring', 'Eager', 'Frosty', 'Gentle', 'Happy', 'Jolly', 'Lucky', 'Merry', 'Nimble', 'Quiet', 'Swift'];
const ANIMALS = ['Otter', 'Fox', 'Heron', 'Lynx', 'Panda', 'Robin', 'Seal', 'Tiger', 'Wren', 'Koala', 'Badger', 'Falcon'];
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// ---- who am I ---------------------------------------------------------------
const hash = (s) => [...s].reduce((h, c) => (h * 31 + c.codePointAt(0)) >>> 0, 7);
const pick = (list) => list[Math.floor(Math.random() * list.length)];
const slug = (s) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'guest';

const fromUrl = params.get('user');
let name = fromUrl ? fromUrl.charAt(0).toUpperCase() + fromUrl.slice(1) : localStorage.getItem('tandem:name') || `${pick(ADJECTIVES)} ${pick(ANIMALS)}`;
let color = localStorage.getItem('tandem:color') || PALETTE[hash(name) % PALETTE.length];
const userId = fromUrl ? slug(fromUrl) : localStorage.getItem('tandem:user') || `${slug(name)}-${Math.random().toString(36).slice(2, 6)}`;
if (!fromUrl) {
  localStorage.setItem('tandem:name', name);
  localStorage.setItem('tandem:user', userId);
}

// ---- which document ---------------------------------------------------------
const docId = params.get('doc') || localStorage.getItem('tandem:last-doc') || 'welcome';
localStorage.setItem('tandem:last-doc', docId);
const recent = JSON.parse(localStorage.getItem('tandem:recent') || '[]').filter((d) => d !== docId);
localStorage.setItem('tandem:recent', JSON.stringify([docId, ...recent].slice(0, 12)));
$('doc-title').textContent = docId;
document.title = `${docId} — Tandem`;

// ---- connect ----------------------------------------------------------------
let token = null;
async function fetchToken() {
  const res = await fetch(`/api/dev/token?user=${encodeURIComponent(userId)}&name=${encodeURIComponent(name)}`);
  if (!res.ok) throw new Error(`token: HTTP ${res.status}`);
  token = (await res.json()).token;
  return token;
}
const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
const client = new TandemClient({ urls: [`${scheme}://${location.host}/collab`], token: fetchToken });
const doc = client.open(docId, { state: { name, color } });

const quill = new Quill('#editor', {
  theme: 'snow',
  modules: { toolbar: '#toolbar' }, // undo and redo are the document's: bindQuill takes over Quill's history
  placeholder: 'Start writing — everyone here sees it as you type…',
});
const binding = bindQuill(doc, quill);
doc.ready.then(() => quill.focus());

// ---- undo and redo (only your own changes) --------------------------------------
function renderUndo() {
  $('undo').disabled = !doc.canUndo;
  $('redo').disabled = !doc.canRedo;
}
$('undo').addEventListener('click', () => doc.undo());
$('redo').addEventListener('click', () => doc.redo());
doc.on('undostate', renderUndo);

// ---- status -----------------------------------------------------------------
const STATUS_TEXT = { connecting: 'Connecting…', online: 'Saving…', synced: 'All changes saved', offline: 'Offline' };
function renderStatus() {
  const s = doc.status;
  $('status').dataset.status = s;
  const pending = doc.pending && s === 'offline' ? ' — edits kept on this device' : '';
  $('status-text').textContent = STATUS_TEXT[s] + pending;
  $('sync-info').textContent = doc.version ? `Version ${doc.version}` : 'New document';
}
doc.on('status', renderStatus);
doc.on('change', renderStatus);
client.on('status', renderStatus);
renderStatus();

// ---- who is here ------------------------------------------------------------
function initials(n) {
  const parts = String(n).trim().split(/\s+/);
  return ((parts[0]?.[0] ?? '?') + (parts.length > 1 ? parts.at(-1)[0] : '')).toUpperCase();
}
function avatar(person, me) {
  const el = document.createElement('button');
  el.className = `avatar${me ? ' me' : ''}`;
  el.style.setProperty('--c', person.color);
  el.textContent = initials(person.name);
  el.title = me ? `${person.name} (you) — click to rename` : person.name;
  el.dataset.name = person.name;
  if (me) el.addEventListener('click', openNameDialog);
  return el;
}
function renderPeople() {
  const seen = new Set();
  const others = [];
  for (const p of doc.peers()) {
    const key = p.user || p.client;
    if (seen.has(key) || key === userId) continue;
    seen.add(key);
    others.push({ name: typeof p.state?.name === 'string' ? p.state.name : p.name || p.user, color: typeof p.state?.color === 'string' ? p.state.color : '#64748b' });
  }
  const list = [avatar({ name, color }, true), ...others.slice(0, 6).map((p) => avatar(p, false))];
  if (others.length > 6) {
    const more = document.createElement('span');
    more.className = 'avatar more';
    more.textContent = `+${others.length - 6}`;
    list.push(more);
  }
  $('people').replaceChildren(...list);
  $('people').title = others.length ? `${others.length + 1} people here` : 'Only you here';
}
doc.on('presence', renderPeople);
renderPeople();

// ---- rename -----------------------------------------------------------------
function openNameDialog() {
  $('name-input').value = name;
  const sw = $('swatches');
  sw.replaceChildren(
    ...PALETTE.map((c) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = `swatch${c === color ? ' on' : ''}`;
      b.style.background = c;
      b.setAttribute('aria-label', c);
      b.onclick = () => {
        sw.querySelectorAll('.swatch').forEach((x) => x.classList.toggle('on', x === b));
        sw.dataset.color = c;
      };
      return b;
    }),
  );
  sw.dataset.color = color;
  $('name-dialog').showModal();
}
$('name-dialog').addEventListener('close', () => {
  if ($('name-dialog').returnValue !== 'ok') return;
  name = $('name-input').value.trim() || name;
  color = $('swatches').dataset.color || color;
  localStorage.setItem('tandem:name', name);
  localStorage.setItem('tandem:color', color);
  doc.setPresenceState({ name, color });
  renderPeople();
});

// ---- documents --------------------------------------------------------------
function toggleMenu(open) {
  $('doc-menu').hidden = !open;
  $('doc-button').setAttribute('aria-expanded', String(open));
  if (open) {
    $('new-doc-name').focus();
    loadDocList();
  }
}
$('doc-button').addEventListener('click', (e) => {
  e.stopPropagation();
  toggleMenu($('doc-menu').hidden);
});
document.addEventListener('click', (e) => {
  if (!$('doc-menu').contains(/** @type {Node} */ (e.target))) toggleMenu(false);
});
document.addEventListener('keydown', (e) => e.key === 'Escape' && toggleMenu(false));
$('new-doc').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = $('new-doc-name').value.trim().replace(/\s+/g, '-').replace(/[^A-Za-z0-9._:@~/-]/g, '').replace(/^[^A-Za-z0-9]+/, '');
  if (id) openDoc(id);
});
function openDoc(id) {
  const url = new URL(location.href);
  url.searchParams.set('doc', id);
  location.href = url.toString();
}
function ago(seconds) {
  const s = Date.now() / 1000 - seconds;
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}
async function loadDocList() {
  let docs = [];
  try {
    const res = await fetch('/api/docs', { headers: { authorization: `Bearer ${token ?? (await fetchToken())}` } });
    if (res.ok) docs = await res.json();
  } catch {
    /* offline: show the recent ones */
  }
  const known = new Map(docs.map((d) => [d.doc, d]));
  const ids = [...new Set([...JSON.parse(localStorage.getItem('tandem:recent') || '[]'), ...docs.sort((a, b) => b.updated - a.updated).map((d) => d.doc)])].slice(0, 20);
  $('doc-list').replaceChildren(
    ...ids.map((id) => {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = `?doc=${encodeURIComponent(id)}${fromUrl ? `&user=${encodeURIComponent(fromUrl)}` : ''}`;
      a.className = id === docId ? 'current' : '';
      const info = known.get(id);
      a.innerHTML = `<span class="doc-name"></span><span class="doc-meta">${info ? `${ago(info.updated)} · v${info.v}` : 'not saved yet'}</span>`;
      a.querySelector('.doc-name').textContent = id;
      li.appendChild(a);
      return li;
    }),
  );
}

// ---- history: time slider, authors, restore, labels ------------------------------------
// Etherpad's timeslider, over REST (doc.history): the slider picks a version, the
// view below shows it read-only, with who wrote what when "Authors" is on.
const historyView = new Quill('#history-view', { readOnly: true, modules: { toolbar: false } });
let shown = -1;
let asked = 0;
async function showVersion(v) {
  const ticket = ++asked;
  try {
    const past = await doc.history.version(v);
    const authors = $('history-colors').checked ? await doc.history.authors(v) : null;
    if (ticket !== asked) return; // a later move of the slider won
    historyView.setContents(past.content, 'silent');
    const legend = new Map();
    if (authors) {
      let at = 0;
      for (const { user, length } of authors.authors) {
        legend.set(user, colorFor(user));
        historyView.formatText(at, length, { background: colorFor(user).replace('45%)', '88%)') }, 'silent');
        at += length;
      }
    }
    $('history-legend').replaceChildren(
      ...[...legend].map(([user, c]) => {
        const span = document.createElement('span');
        span.style.setProperty('--c', c);
        span.textContent = user;
        return span;
      }),
    );
    shown = past.v;
    const head = doc.version;
    $('history-info').textContent = past.v === head ? `Version ${past.v} (now)` : `Version ${past.v} of ${head}`;
    $('history-restore').disabled = past.v === head || doc.permission === 'read';
  } catch (err) {
    if (ticket === asked) $('history-info').textContent = err.code === 'ERR_HISTORY_COMPACTED' ? `Compacted: the oldest version kept is ${err.oldest}` : String(err.message);
  }
}
async function renderLabels() {
  const labels = await doc.history.labels().catch(() => []);
  $('label-list').replaceChildren(
    ...labels.map((label) => {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = `${label.name} · v${label.v}`;
      b.title = `Labelled by ${label.user}`;
      b.addEventListener('click', () => {
        $('history-slider').value = String(label.v);
        showVersion(label.v);
      });
      li.appendChild(b);
      return li;
    }),
  );
}
function openHistory(open) {
  $('history-panel').hidden = !open;
  $('history-button').setAttribute('aria-expanded', String(open));
  if (!open) return;
  $('history-slider').max = String(doc.version);
  $('history-slider').value = String(doc.version);
  showVersion(doc.version);
  renderLabels();
}
$('history-button').addEventListener('click', () => openHistory($('history-panel').hidden));
$('history-slider').addEventListener('input', () => showVersion(Number($('history-slider').value)));
$('history-colors').addEventListener('change', () => shown >= 0 && showVersion(shown));
$('history-restore').addEventListener('click', async () => {
  $('history-restore').disabled = true;
  await doc.history.restore(shown);
});
$('label-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('label-name').value.trim();
  if (!name || shown < 0) return;
  await doc.history.setLabel(name, shown);
  $('label-name').value = '';
  renderLabels();
});
let following = null;
doc.on('change', () => {
  if ($('history-panel').hidden || following) return;
  following = setTimeout(() => {
    // at most one refresh per 300 ms while people type; the view follows the head if it was there
    following = null;
    const slider = $('history-slider');
    const atHead = Number(slider.value) >= Number(slider.max);
    slider.max = String(doc.version);
    if (atHead) {
      slider.value = String(doc.version);
      showVersion(doc.version);
    }
  }, 300);
});

// For debugging and the browser tests.
window.tandem = { client, doc, quill, binding, historyView, showVersion };
