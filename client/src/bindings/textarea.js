/**
 * Binds a `<textarea>` (or `<input>`) to a document: typing becomes edits,
 * remote edits are spliced in keeping the local selection, and the caret is
 * shared as presence. Plain text only (attributes are ignored).
 *
 * Undo and redo are the document's (per user, see undo.js), not the
 * browser's: Ctrl/Cmd-Z, Shift-Ctrl/Cmd-Z, Ctrl-Y and the Edit menu
 * (`historyUndo`/`historyRedo` input events) call `doc.undo()`/`doc.redo()`.
 */

/**
 * The edit turning `before` into `after`, as a delta (UTF-16): the common
 * prefix and suffix are kept, never cutting a surrogate pair.
 * @param {string} before
 * @param {string} after
 * @param {number} [caret]  where the caret is in `after` (disambiguates repeated characters)
 */
export function diffText(before, after, caret = after.length) {
  const max = Math.min(before.length, after.length);
  let prefix = 0;
  while (prefix < max && before.charCodeAt(prefix) === after.charCodeAt(prefix)) prefix++;
  // An insertion ends at the caret: don't let the prefix run past it.
  prefix = Math.min(prefix, Math.max(0, caret - Math.max(0, after.length - before.length)));
  if (prefix > 0 && isHigh(before.charCodeAt(prefix - 1))) prefix--;
  let suffix = 0;
  while (
    suffix < max - prefix &&
    before.charCodeAt(before.length - 1 - suffix) === after.charCodeAt(after.length - 1 - suffix)
  ) suffix++;
  if (suffix > 0 && isLow(before.charCodeAt(before.length - suffix))) suffix--;
  const ops = [];
  if (prefix) ops.push({ retain: prefix });
  const removed = before.length - prefix - suffix;
  const inserted = after.slice(prefix, after.length - suffix);
  if (removed) ops.push({ delete: removed });
  if (inserted) ops.push({ insert: inserted });
  return ops;
}

const isHigh = (c) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c) => c >= 0xdc00 && c <= 0xdfff;

/**
 * @param {import('../document.js').TandemDoc} doc
 * @param {HTMLTextAreaElement | HTMLInputElement} textarea
 * @returns {{destroy(): void}}
 */
export function bindTextarea(doc, textarea) {
  let value = textarea.value;
  let ready = false;
  textarea.readOnly = true;

  const render = () => {
    value = textarea.value = doc.text;
  };
  const sendCursor = () => {
    if (ready) doc.setCursor({ index: textarea.selectionStart ?? 0, length: (textarea.selectionEnd ?? 0) - (textarea.selectionStart ?? 0) });
  };
  const onInput = () => {
    if (!ready) return;
    const next = textarea.value;
    const ops = diffText(value, next, textarea.selectionEnd ?? next.length);
    value = next;
    if (ops.length && !doc.submit(ops)) render();
    sendCursor();
  };
  const offChange = doc.on('change', ({ delta, source, selection }) => {
    if (source === 'local' || !ready) return;
    if (source !== 'remote') {
      render();
      if (selection) textarea.setSelectionRange(selection.index, selection.index + selection.length);
      return;
    }
    const start = textarea.selectionStart ?? 0;
    const end = textarea.selectionEnd ?? 0;
    render();
    textarea.setSelectionRange(delta.transformPosition(start, true), delta.transformPosition(end, true));
  });
  const offBefore = doc.on('beforechange', () => {
    if (ready && textarea.value !== value) onInput();
  });
  const offJoined = doc.on('joined', () => {
    textarea.readOnly = doc.permission === 'read';
  });
  doc.ready.then(() => {
    ready = true;
    render();
    textarea.readOnly = doc.permission === 'read';
  });
  /** @param {KeyboardEvent} event */
  const onKeydown = (event) => {
    if (!(event.ctrlKey || event.metaKey) || event.altKey) return;
    const key = event.key.toLowerCase();
    const which = key === 'z' ? (event.shiftKey ? 'redo' : 'undo') : key === 'y' && event.ctrlKey ? 'redo' : null;
    if (!which) return;
    event.preventDefault();
    if (ready) doc[which]();
  };
  /** @param {InputEvent} event */
  const onBeforeInput = (event) => {
    if (event.inputType !== 'historyUndo' && event.inputType !== 'historyRedo') return;
    event.preventDefault();
    if (ready) doc[event.inputType === 'historyUndo' ? 'undo' : 'redo']();
  };
  textarea.addEventListener('keydown', onKeydown);
  textarea.addEventListener('beforeinput', onBeforeInput);
  textarea.addEventListener('input', onInput);
  textarea.addEventListener('select', sendCursor);
  textarea.addEventListener('keyup', sendCursor);
  textarea.addEventListener('mouseup', sendCursor);
  return {
    destroy() {
      offChange();
      offBefore();
      offJoined();
      textarea.removeEventListener('keydown', onKeydown);
      textarea.removeEventListener('beforeinput', onBeforeInput);
      textarea.removeEventListener('input', onInput);
      textarea.removeEventListener('select', sendCursor);
      textarea.removeEventListener('keyup', sendCursor);
      textarea.removeEventListener('mouseup', sendCursor);
    },
  };
}
