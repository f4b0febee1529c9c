#!/usr/bin/env bash
# The whole test suite: Python (unit, property, contract, integration,
# differential, adversarial) and the JS client's Node and browser tests, in
# two phases (README, "Development"):
#   1. every test not marked `alone`, in two pytest-xdist workers (whole files
#      per worker), while the JS client's tests run beside them;
#   2. the tests marked `alone` (they measure time or memory), one at a time
#      with nothing else running.
# Extra arguments go to both pytest phases (e.g. scripts/test.sh --slow -k transform).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
# Without a browser the browser tests cannot run: say so now, rather than
# fail them one by one after the rest of the suite (or, worse, skip them).
if [ -z "${TANDEM_SKIP_BROWSER:-}" ] && [ -z "$(find_chromium)" ]; then
  echo "test: no Chromium found for the browser tests (looked at \$CHROMIUM, then PATH)." >&2
  for line in "${CHROMIUM_HELP[@]}"; do echo "  $line" >&2; done
  exit 1
fi

status=0
# pytest exits 5 when a phase selected no test (say, -k matched only the other phase).
pytest_phase() {
  local code=0
  .venv/bin/python -m pytest "$@" || code=$?
  [ "$code" = 5 ] || [ "$code" = 0 ] || status=$code
}

# Phase 1: the JS client's tests in the background, their output kept until they end.
js_pid=""
if [ -f client/package.json ] && [ -z "${TANDEM_SKIP_JS:-}" ]; then
  js_log=$(mktemp)
  trap 'rm -f "$js_log"' EXIT
  (cd client && PATH="$PWD/../.venv/bin:$PATH" npm test) >"$js_log" 2>&1 &
  js_pid=$!
fi
pytest_phase -n 2 --dist loadfile --phase=shared "$@"
if [ -n "$js_pid" ]; then
  js_code=0
  wait "$js_pid" || js_code=$?
  echo "== JS client tests (client/: npm test) =="
  cat "$js_log"
  [ "$js_code" = 0 ] || status=$js_code
fi

# Phase 2: the tests that measure time or memory, with nothing beside them.
pytest_phase --phase=alone "$@"
exit $status
