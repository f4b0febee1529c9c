#!/usr/bin/env bash
# The whole test suite: Python (unit, property, contract, integration,
# differential) and the JS client's Node and browser tests. Extra arguments go
# to pytest (e.g. scripts/test.sh --slow -k transform).
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
.venv/bin/python -m pytest "$@" || status=$?
if [ -f client/package.json ] && [ -z "${TANDEM_SKIP_JS:-}" ]; then
  (cd client && PATH="$PWD/../.venv/bin:$PATH" npm test) || status=$?
fi
exit $status
