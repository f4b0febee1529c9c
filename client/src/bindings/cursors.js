/**
 * Others' cursors over a Quill editor: a coloured caret with a name label,
 * and a tinted selection, in an overlay that never takes pointer events.
 * Positions come from `quill.getBounds`, so the overlay follows scrolling,
 * wrapping and resizing (it redraws on each).
 */

/** A stable colour for someone with no colour in their presence state. */
export function colorFor(key) {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) >>> 0;
  return `hsl(${h % 360} 70% 45%)`;
}

export class CursorOverlay {
  /** @param {any} quill */
  constructor(quill) {
    this.quill = quill;
    /** @type {import('../presence.js').Peer[]} */
    this.peers = [];
    const container = quill.container;
    if (getComputedStyle(container).position === 'static') container.style.position = 'relative';
    this.root = document.createElement('div');
    this.root.className = 'tandem-cursors';
    Object.assign(this.root.style, { position: 'absolute', inset: '0', pointerEvents: 'none', overflow: 'hidden', zIndex: '2' });
    container.appendChild(this.root);
    this.redraw = () => this.render(this.peers);
    quill.root.addEventListener('scroll', this.redraw);
    this.resize = typeof ResizeObserver !== 'undefined' ? new ResizeObserver(this.redraw) : null;
    this.resize?.observe(container);
  }

  /** @param {import('../presence.js').Peer[]} peers */
  render(peers) {
    this.peers = peers;
    const quill = this.quill;
    const max = quill.getLength() - 1;
    const parts = [];
    for (const peer of peers) {
      if (!peer.cursor) continue;
      const color = typeof peer.state?.color === 'string' ? peer.state.color : colorFor(peer.user || peer.client);
      const name = typeof peer.state?.name === 'string' ? peer.state.name : peer.name || peer.user;
      const start = Math.max(0, Math.min(peer.cursor.index, max));
      const end = Math.max(start, Math.min(peer.cursor.index + peer.cursor.length, max));
      for (const r of this.rects(start, end - start)) {
        parts.push(box('tandem-selection', r.left, r.top, r.width, r.height, { background: color, opacity: '0.18' }));
      }
      const caret = quill.getBounds(end, 0);
      if (!caret) continue;
      const el = box('tandem-caret', caret.left, caret.top, 2, caret.height, { background: color });
      el.dataset.client = peer.client;
      const label = document.createElement('div');
      label.className = 'tandem-caret-label';
      label.textContent = name;
      Object.assign(label.style, {
        position: 'absolute', left: '-1px', bottom: '100%', background: color, color: '#fff',
        font: '600 11px/1.6 system-ui, sans-serif', padding: '0 6px', borderRadius: '4px 4px 4px 0',
        whiteSpace: 'nowrap', transform: 'translateY(-1px)',
      });
      el.appendChild(label);
      parts.push(el);
    }
    this.root.replaceChildren(...parts);
  }

  /** The rectangles covering a range, one per line. */
  rects(index, length) {
    if (!length) return [];
    const quill = this.quill;
    const out = [];
    for (const line of quill.getLines(index, length)) {
      const lineStart = quill.getIndex(line);
      const from = Math.max(index, lineStart);
      const to = Math.min(index + length, lineStart + line.length() - 1);
      if (to > from) {
        const b = quill.getBounds(from, to - from);
        if (b) out.push(b);
      }
    }
    return out;
  }

  destroy() {
    this.quill.root.removeEventListener('scroll', this.redraw);
    this.resize?.disconnect();
    this.root.remove();
  }
}

function box(className, left, top, width, height, style) {
  const el = document.createElement('div');
  el.className = className;
  Object.assign(el.style, { position: 'absolute', left: `${left}px`, top: `${top}px`, width: `${width}px`, height: `${height}px`, ...style });
  return el;
}
