#!/usr/bin/env bash
# Installs everything Tandem needs to run and to be tested, idempotently:
# a virtualenv in .venv with the package and its test extras, and the npm
# packages of the JS client (the demo needs them), and with --test the
# differential-test fixtures and Chromium; with --bench the benchmark peers.
# Re-running it is cheap: each step is skipped when already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh

# Python >= 3.11, Node >= 20 and npm >= 9 (README, "Prerequisites"): stop early and say so.
if [ ! -x .venv/bin/python ]; then
  python=$(find_python)
  "$python" -m venv .venv || prereq_fail "could not create .venv with $python" \
    "Debian/Ubuntu: sudo apt-get install python3-venv"
fi
.venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || prereq_fail ".venv has Python $(.venv/bin/python -V 2>&1); Tandem needs >= $MIN_PYTHON" \
    "remove .venv and run again (PYTHON=/path/to/python3.11+ to choose one)"
check_node
stamp=.venv/.tandem-installed
pip_install() {
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[test]"
    touch "$stamp"
  fi
}

npm_install() {
  # npm packages of one folder, reinstalled only when its package.json changed.
  local dir=$1
  if [ -f "$dir/package.json" ]; then
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package.json" -nt "$dir/node_modules" ]; then
      (cd "$dir" && npm install --no-audit --no-fund --loglevel=error) && touch "$dir/node_modules"
    fi
  fi
}

# The Python packages and the npm folders install at the same time (a fresh
# clone waits for the longest, not for their sum); any failure stops here.
# The demo page serves Quill and the JS client from client/node_modules.
installs=()
pip_install & installs+=($!)
npm_install client & installs+=($!)
[ "${1:-}" != "--test" ] || { npm_install tests/differential/js & installs+=($!); }
for pid in "${installs[@]}"; do wait "$pid"; done

if [ "${1:-}" = "--test" ]; then
  # Headless Chromium for the browser tests (Debian's package; Playwright's own
  # browser download does not work offline) and promtool (Debian's prometheus
  # package) for the alert rules' test. Installed here only as root with apt-get
  # (CI); otherwise scripts/test.sh stops with install instructions.
  apt_packages=()
  [ -n "$(find_chromium)" ] || [ -n "${CHROMIUM:-${CHROMIUM_PATH:-}}" ] || apt_packages+=(chromium)
  command -v promtool >/dev/null 2>&1 || apt_packages+=(prometheus)
  if [ ${#apt_packages[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${apt_packages[@]}" >/dev/null) || echo "bootstrap: could not install ${apt_packages[*]}" >&2
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
