// Hocuspocus 4 with its defaults and no extensions (documents in memory).
// Usage: node hocuspocus.mjs PORT
import { Server } from '@hocuspocus/server';

const port = Number(process.argv[2] ?? 1234);
const server = new Server({ port, address: '127.0.0.1', quiet: true, stopOnSignals: true });
await server.listen();
