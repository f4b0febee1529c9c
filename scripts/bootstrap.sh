#!/usr/bin/env bash
# Installs everything Tandem needs to run and to be tested, idempotently:
# a virtualenv in .venv with the package and its test extras, and the npm
# packages of the JS client (the demo needs them), and with --test the
# differential-test fixtures and Chromium; with --bench the benchmark peers.
# Re-running it is cheap: each step is skipped when already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.tandem-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi

npm_install() {
  # npm packages of one folder, reinstalled only when its package.json changed.
  local dir=$1
  if [ -f "$dir/package.json" ] && command -v npm >/dev/null 2>&1; then
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package.json" -nt "$dir/node_modules" ]; then
      (cd "$dir" && npm install --no-audit --no-fund --loglevel=error) && touch "$dir/node_modules"
    fi
  fi
}

# The demo page serves Quill and the JS client from client/node_modules.
npm_install client

if [ "${1:-}" = "--test" ]; then
  npm_install tests/differential/js
  # Headless Chromium for the browser tests (Debian packages; Playwright's own
  # browser download does not work offline).
  if [ -f client/package.json ] && ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
        || echo "bootstrap: could not install chromium; browser tests will fail" >&2
    fi
  fi
fi
if [ "${1:-}" = "--bench" ]; then
  bench_stamp=.venv/.tandem-bench-installed
  if [ ! -f "$bench_stamp" ] || [ pyproject.toml -nt "$bench_stamp" ]; then
    .venv/bin/python -m pip install --quiet -e ".[test,bench]" && touch "$bench_stamp"
  fi
  npm_install bench/load
  npm_install bench/peers
fi
