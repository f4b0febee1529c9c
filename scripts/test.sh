#!/usr/bin/env bash
# The whole test suite: Python (unit, property, contract, integration,
# differential) and the JS client's Node and browser tests. Extra arguments go
# to pytest (e.g. scripts/test.sh --slow -k transform).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ -f client/package.json ] && [ -z "${TANDEM_SKIP_JS:-}" ]; then
  (cd client && PATH="$PWD/../.venv/bin:$PATH" npm test) || status=$?
fi
exit $status
