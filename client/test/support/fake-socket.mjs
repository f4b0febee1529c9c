// A scripted stand-in for a browser WebSocket, for tests of the connection and
// document logic: it records what the client sends; the test plays the server.

export class FakeSocket {
  /** every socket created, in order (reset it in each test's setup) */
  static all = [];
  constructor(url, protocols = []) {
    this.url = new URL(url);
    this.protocols = protocols;
    this.readyState = 1;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  /** the server sends a frame (an object, or an array: a batch) */
  frame(data) {
    this.onmessage({ data: JSON.stringify(data) });
  }
  /** the server closes */
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose({ code, reason: '' });
  }
  /** every message of `type` the client sent */
  all(type) {
    return this.sent.filter((m) => m.type === type);
  }
  /** the last message of `type` the client sent */
  last(type) {
    return this.all(type).at(-1);
  }
  /** the server's hello */
  hello() {
    this.frame({ type: 'hello', protocol: 1, client: 'me', user: 'u', name: 'U', expires: 0 });
  }
}
