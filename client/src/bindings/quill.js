/**
 * Binds a Quill 2 editor to a document: rich-text edits both ways (bold,
 * italic, links… are ordinary delta attributes), the local selection kept
 * in place when remote edits arrive, our selection shared as presence, and
 * everyone else's drawn as a coloured caret with a name label (and a tinted
 * selection).
 *
 * The trailing newline: a Quill document always ends with "\n"; a Tandem
 * document need not (a new one is empty). The editor shows the document
 * plus, when `extra` is 1, one newline of Quill's own that is not in the
 * document. Edits of ours that touch that newline are clipped to the
 * document, except a line format on it (a heading on the last line), which
 * adds the newline to the document. `extra` is re-measured after every
 * remote edit; any mismatch re-renders the editor from the document.
 *
 * Undo and redo are the document's (`doc.undo()`, per user, see undo.js),
 * not Quill's: Quill's history module undoes everyone's edits, so the
 * binding takes it over. Its keys (Ctrl/Cmd-Z, Shift-Ctrl/Cmd-Z, Ctrl-Y on
 * Windows), the browser's Edit menu (`historyUndo` input events) and calls
 * to `quill.history.undo()` go to the document, and it records nothing;
 * `destroy()` gives it back. Ctrl-Y redoes on every platform.
 *
 * Quill is passed in, never imported: no dependency on how it was loaded.
 */
import Delta from 'quill-delta';
import { CursorOverlay } from './cursors.js';

/**
 * An editor change → the document change (clip the extra newline).
 * @param {Delta} change  on the editor (document + `extra` newline)
 * @param {number} docLength  the document's length before the change
 * @param {number} extra  0 or 1
 * @returns {{delta: Delta, extra: number}}
 */
export function editorToDoc(change, docLength, extra) {
  const out = new Delta();
  let pos = 0;
  let consumed = 0;
  /** @type {Record<string, unknown> | null} */
  let lineFormat = null;
  for (const op of change.ops) {
    if (op.insert !== undefined) {
      out.push(op);
      continue;
    }
    const n = typeof op.retain === 'object' ? 1 : /** @type {number} */ (op.retain ?? op.delete);
    const inDoc = Math.max(0, Math.min(n, docLength - pos));
    if (inDoc > 0) {
      out.push(op.delete !== undefined ? { delete: inDoc } : { ...op, retain: typeof op.retain === 'object' ? op.retain : inDoc });
      consumed += inDoc;
    }
    if (n > inDoc && extra && op.retain !== undefined && op.attributes) {
      lineFormat = Object.fromEntries(Object.entries(op.attributes).filter(([, v]) => v !== null));
    }
    pos += n;
  }
  if (lineFormat && Object.keys(lineFormat).length) {
    out.retain(docLength - consumed).insert('\n', lineFormat);
    extra = 0;
  }
  return { delta: out.chop(), extra };
}

/**
 * @param {import('../document.js').TandemDoc} doc
 * @param {any} quill  a Quill 2 instance
 * @param {{cursors?: boolean}} [options]  cursors: draw others' cursors (default true)
 * @returns {{destroy(): void, render(): void, overlay: CursorOverlay | null}}
 */
export function bindQuill(doc, quill, { cursors = true } = {}) {
  let ready = false;
  let applying = false;
  let extra = 1;
  const overlay = cursors ? new CursorOverlay(quill) : null;
  quill.enable(false);

  const editable = () => ready && doc.permission !== 'read';
  const redrawCursors = () => overlay?.render(doc.peers());
  const render = () => {
    const range = quill.getSelection();
    applying = true;
    quill.setContents(doc.content, 'silent');
    applying = false;
    extra = quill.getLength() - doc.length;
    if (range) quill.setSelection(Math.min(range.index, quill.getLength() - 1), 0, 'silent');
    redrawCursors();
  };
  const sendSelection = (range) => {
    if (ready && range) doc.setCursor({ index: range.index, length: range.length });
  };

  const onTextChange = (/** @type {Delta} */ change, _old, source) => {
    if (applying || !ready) return;
    const docLength = doc.length;
    const { delta, extra: nextExtra } = editorToDoc(change, docLength, extra);
    extra = nextExtra;
    if (delta.ops.length && !doc.submit(delta)) return render();
    if (quill.getLength() !== doc.length + extra) return render();
    if (source === 'user') sendSelection(quill.getSelection());
    redrawCursors();
  };
  const onSelectionChange = (range, _old, source) => {
    if (source !== 'silent') sendSelection(range);
  };

  const offBefore = doc.on('beforechange', () => {
    // Quill reports typing from a MutationObserver: make it report now, so
    // that the document knows every local edit before it transforms a remote one.
    if (ready) quill.update('user');
  });
  const offChange = doc.on('change', ({ delta, source }) => {
    if (source !== 'remote' || !ready) return;
    applying = true;
    try {
      quill.updateContents(delta, 'api'); // 'api': Quill moves our selection, an insert at the caret stays after it
    } finally {
      applying = false;
    }
    extra = quill.getLength() - doc.length;
    if (extra !== 0 && extra !== 1) render();
    else redrawCursors();
  });
  const offUndo = doc.on('change', ({ delta, source, selection }) => {
    if ((source !== 'undo' && source !== 'redo') || !ready) return;
    applying = true;
    try {
      quill.updateContents(delta, 'api');
    } finally {
      applying = false;
    }
    extra = quill.getLength() - doc.length;
    if (extra !== 0 && extra !== 1) render();
    if (selection) quill.setSelection(selection.index, selection.length, 'silent');
    redrawCursors();
  });
  const releaseHistory = takeOverHistory(quill, doc);
  const offPresence = doc.on('presence', (peers) => overlay?.render(peers));
  const offJoined = doc.on('joined', () => quill.enable(editable()));

  quill.on('text-change', onTextChange);
  quill.on('selection-change', onSelectionChange);
  doc.ready.then(() => {
    ready = true;
    render();
    quill.enable(editable());
  });

  return {
    overlay,
    render,
    destroy() {
      offBefore();
      offChange();
      offPresence();
      offJoined();
      offUndo();
      releaseHistory();
      quill.off('text-change', onTextChange);
      quill.off('selection-change', onSelectionChange);
      overlay?.destroy();
    },
  };
}

/**
 * Route Quill's undo and redo to the document, and stop Quill recording.
 * @param {any} quill
 * @param {import('../document.js').TandemDoc} doc
 * @returns {() => void} gives Quill its history back
 */
function takeOverHistory(quill, doc) {
  const history = quill.history ?? quill.getModule?.('history');
  const undo = () => (doc.undo(), false);
  const redo = () => (doc.redo(), false);
  const patched = { undo, redo, change: (from) => (from === 'undo' ? undo() : redo()), record() {}, transform() {} };
  if (history) {
    history.clear?.();
    Object.assign(history, patched); // its key bindings call this.change(); beforeinput calls this.undo()
  }
  // Ctrl-Y redoes everywhere (Quill binds it on Windows only); with no history module, bind all three.
  const bindings = [{ key: 'y', ctrlKey: true, handler: redo }];
  if (!history) bindings.push({ key: 'z', shortKey: true, handler: undo }, { key: ['z', 'Z'], shortKey: true, shiftKey: true, handler: redo });
  const keyboard = quill.keyboard;
  const added = [];
  for (const { handler, ...binding } of bindings) {
    const before = new Set(Object.values(keyboard?.bindings ?? {}).flat());
    keyboard?.addBinding(binding, handler);
    for (const list of Object.values(keyboard?.bindings ?? {})) for (const b of list) if (!before.has(b)) added.push(b);
  }
  return () => {
    if (history) for (const key of Object.keys(patched)) delete history[key];
    for (const list of Object.values(keyboard?.bindings ?? {})) {
      for (let i = list.length - 1; i >= 0; i--) if (added.includes(list[i])) list.splice(i, 1);
    }
  };
}
