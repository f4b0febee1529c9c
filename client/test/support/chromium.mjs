// Finding the Chromium the browser tests drive (through playwright-core, which
// downloads no browser of its own): $CHROMIUM (or the older $CHROMIUM_PATH),
// else the first of the usual names on PATH, else the macOS application.
// When none is found the browser tests fail with this message, never skip:
// set TANDEM_SKIP_BROWSER=1 to leave them out on purpose.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export const INSTALL_HELP = `No Chromium found for the browser tests. Install one, or point CHROMIUM at it:
  Debian:  sudo apt-get install chromium
  Ubuntu:  sudo snap install chromium   (or: sudo apt-get install chromium-browser)
  macOS:   brew install --cask chromium  (or set CHROMIUM to Google Chrome's binary)
  any:     CHROMIUM=/path/to/chromium make test
To leave the browser tests out on purpose: TANDEM_SKIP_BROWSER=1 make test`;

const NAMES = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable', 'chrome'];
const MACOS = [
  '/Applications/Chromium.app/Contents/MacOS/Chromium',
  '/Applications/Google Chrome.app/Contents/MacOS/Google Chrome',
];

function executable(path) {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The Chromium executable to drive, or null. */
export function findChromium(env = process.env) {
  const given = env.CHROMIUM || env.CHROMIUM_PATH;
  if (given) return executable(given) ? given : null;
  for (const dir of (env.PATH || '').split(delimiter).filter(Boolean)) {
    for (const name of NAMES) {
      if (executable(join(dir, name))) return join(dir, name);
    }
  }
  return MACOS.find(executable) ?? null;
}

/** `skip` for node:test: a reason only when the browser tests are left out on purpose. */
export const skipBrowser = process.env.TANDEM_SKIP_BROWSER ? 'TANDEM_SKIP_BROWSER is set' : false;

/** Launch headless Chromium, or throw INSTALL_HELP (a failure, not a skip). */
export async function launchChromium() {
  const executablePath = findChromium();
  if (!executablePath) throw new Error(INSTALL_HELP);
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
