/**
 * @tandem/client — the JavaScript client of Tandem.
 *
 *   const client = new TandemClient({ urls: ['ws://localhost:8080/collab'], token });
 *   const doc = client.open('notes');
 *   bindQuill(doc, quill);
 */
export { default as Delta } from 'quill-delta';
export { TandemClient } from './connection.js';
export { TandemDoc } from './document.js';
export { DocumentHistory, httpBase } from './history.js';
export { ClientState, MERGE_AT, transformCursor, positionInverse } from './state.js';
export { PresenceTable, localCursor } from './presence.js';
export { UndoManager, GROUP_DELAY, MAX_STACK, typingOf, caretAfter } from './undo.js';
export { MemoryStorage, IndexedDBStorage, defaultStorage, acquireClientId, newClientId } from './storage.js';
export {
  toUtf16,
  toCodePoints,
  indexToUtf16,
  indexToCodePoints,
  rangeToUtf16,
  rangeToCodePoints,
  codePointLength,
  textOf,
  applyToText,
} from './utf16.js';
export { bindQuill, editorToDoc } from './bindings/quill.js';
export { bindTextarea, diffText } from './bindings/textarea.js';
export { CursorOverlay, colorFor } from './bindings/cursors.js';
export { Emitter } from './emitter.js';
