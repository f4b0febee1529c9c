// Start a real Tandem server for a test: `tandem serve` on a free port with a
// fresh data directory, waited for through GET /healthz; tokens from
// `tandem token`. The `tandem` command comes from PATH (scripts/test.sh puts
// the project's .venv/bin there), else TANDEM_BIN, else ../.venv/bin.
import { spawn, execFile, execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The `tandem` executable, or null when there is none with a `serve` command. */
export function tandemBin() {
  const local = fileURLToPath(new URL('../../../.venv/bin/tandem', import.meta.url));
  for (const bin of [process.env.TANDEM_BIN, 'tandem', existsSync(local) ? local : null]) {
    if (!bin) continue;
    try {
      execFileSync(bin, ['serve', '--help'], { stdio: 'ignore' });
      return bin;
    } catch {
      /* try the next */
    }
  }
  return null;
}

/**
 * The `skip` option of tests that need something (`missing` names what is absent,
 * or is falsy when nothing is): the reason to skip, or false. Under CI=true a
 * missing server or browser fails instead, as the Python tests do: this throws,
 * which fails the whole test file.
 */
export function skipWithout(missing) {
  if (!missing) return false;
  if (process.env.CI === 'true') throw new Error(`${missing}: under CI=true this fails instead of skipping`);
  return missing;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {any} */ (srv.address());
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/**
 * @param {{logLevel?: string, env?: Record<string, string>}} [options]  the server's --log-level
 *   (default warning; its log is `stderr()`) and more environment for it
 * @returns {Promise<{port: number, http: string, ws: string, token(user: string, access?: string): Promise<string>, stderr(): string,
 *   getDoc(id: string): Promise<{v: number, content: any[], text: string}>, stop(): Promise<void>}>}
 */
export async function startServer({ logLevel = 'warning', env = {} } = {}) {
  const bin = tandemBin();
  if (!bin) throw new Error('no `tandem serve` found (run scripts/bootstrap.sh)');
  const data = await mkdtemp(join(tmpdir(), 'tandem-js-'));
  const port = await freePort();
  const proc = spawn(bin, ['serve', '--port', String(port), '--data', data, '--dev', '--log-level', logLevel], {
    env: { ...process.env, TANDEM_DEV_MODE: 'true', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const http = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`tandem serve exited ${proc.exitCode}: ${stderr}`);
    try {
      const res = await fetch(`${http}/healthz`);
      if (res.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      proc.kill();
      throw new Error(`tandem serve did not become healthy: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50)); // poll interval for an external process
  }
  const token = async (user, access = '*=write') =>
    (await run(bin, ['token', '--user', user, '--doc', access, '--data', data])).stdout.trim();
  const admin = await token('test-admin');
  return {
    port,
    http,
    ws: `ws://127.0.0.1:${port}/collab`,
    token,
    stderr: () => stderr,
    async getDoc(id) {
      const res = await fetch(`${http}/api/docs/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${admin}` } });
      if (res.status !== 200) throw new Error(`GET /api/docs/${id}: ${res.status} ${await res.text()}`);
      return res.json();
    },
    async stop() {
      proc.kill('SIGTERM');
      await exited;
      await rm(data, { recursive: true, force: true });
    },
  };
}

/**
 * Resolve when `test()` is true, re-checking on each `event` of `emitter`
 * (and once right away); reject after `ms`.
 */
export function until(emitter, event, test, ms = 20000, what = event) {
  return new Promise((resolve, reject) => {
    if (test()) return resolve(undefined);
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${what}`));
    }, ms);
    const off = emitter.on(event, () => {
      if (test()) {
        clearTimeout(timer);
        off();
        resolve(undefined);
      }
    });
  });
}
