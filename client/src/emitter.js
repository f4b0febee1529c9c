/**
 * A minimal event emitter (browser and Node alike): `on` returns an
 * unsubscribe function. A listener that throws does not stop the others; the
 * error is reported on the console.
 */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<(arg: any) => void>>} */
    this.listeners = new Map();
  }

  /**
   * @param {string} event
   * @param {(arg: any) => void} listener
   * @returns {() => void} unsubscribe
   */
  on(event, listener) {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** @param {string} event @param {(arg: any) => void} listener */
  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
  }

  /**
   * Resolve with the next `event` whose argument satisfies `test`.
   * @param {string} event
   * @param {(arg: any) => boolean} [test]
   * @returns {Promise<any>}
   */
  once(event, test = () => true) {
    return new Promise((resolve) => {
      const off = this.on(event, (arg) => {
        if (test(arg)) {
          off();
          resolve(arg);
        }
      });
    });
  }

  /** @param {string} event @param {any} [arg] */
  emit(event, arg) {
    for (const listener of [...(this.listeners.get(event) ?? [])]) {
      try {
        listener(arg);
      } catch (err) {
        console.error(`tandem: a '${event}' listener threw`, err);
      }
    }
  }
}
