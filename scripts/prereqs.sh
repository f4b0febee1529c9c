# Prerequisites, sourced by scripts/bootstrap.sh and scripts/test.sh. Each check
# stops with a message saying what is missing and how to install it. The same
# list is in the README ("Prerequisites"); client/test/support/chromium.mjs
# finds Chromium the same way as find_chromium here.

MIN_PYTHON=3.11
MIN_NODE=20
MIN_NPM=9

prereq_fail() {
  echo "bootstrap: $1" >&2
  shift
  for line in "$@"; do echo "  $line" >&2; done
  exit 1
}

# The first Python >= 3.11: $PYTHON if set, else python3.13 … python3.
find_python() {
  local candidates=("${PYTHON:-}")
  [ -n "${PYTHON:-}" ] || candidates=(python3.13 python3.12 python3.11 python3)
  local found=""
  for py in "${candidates[@]}"; do
    command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"
      return 0
    fi
    found="$found $py ($("$py" -c 'import platform; print(platform.python_version())' 2>/dev/null))"
  done
  prereq_fail "Tandem needs Python >= $MIN_PYTHON; found:${found:- none}" \
    "Debian/Ubuntu: sudo apt-get install python3 python3-venv   (Debian 12 / Ubuntu 24.04 have 3.11+)" \
    "macOS:         brew install python@3.12" \
    "or point PYTHON at one: PYTHON=/path/to/python3.12 make serve"
}

# Node >= 20 and npm >= 9: the demo page and the JS client's tests need their packages.
check_node() {
  local node_major npm_major
  local help=("Debian/Ubuntu: sudo apt-get install nodejs npm   (or NodeSource's nodejs 20+)"
    "macOS:         brew install node")
  command -v node >/dev/null 2>&1 || prereq_fail "Tandem needs Node.js >= $MIN_NODE (not found)" "${help[@]}"
  command -v npm >/dev/null 2>&1 || prereq_fail "Tandem needs npm >= $MIN_NPM (not found)" "${help[@]}"
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$node_major" -ge "$MIN_NODE" ] || prereq_fail "Tandem needs Node.js >= $MIN_NODE; found $(node --version)" "${help[@]}"
  npm_major=$(npm --version | cut -d. -f1)
  [ "$npm_major" -ge "$MIN_NPM" ] || prereq_fail "Tandem needs npm >= $MIN_NPM; found $(npm --version)" "${help[@]}"
}

# Chromium for the browser tests: $CHROMIUM (or $CHROMIUM_PATH), else on PATH, else macOS's.
find_chromium() {
  local given=${CHROMIUM:-${CHROMIUM_PATH:-}}
  if [ -n "$given" ]; then
    [ -x "$given" ] && echo "$given"
    return 0
  fi
  local name
  for name in chromium chromium-browser google-chrome google-chrome-stable chrome; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return 0
    fi
  done
  for name in "/Applications/Chromium.app/Contents/MacOS/Chromium" \
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"; do
    [ -x "$name" ] && echo "$name" && return 0
  done
  return 0
}

CHROMIUM_HELP=(
  "Debian:  sudo apt-get install chromium"
  "Ubuntu:  sudo snap install chromium   (or: sudo apt-get install chromium-browser)"
  "macOS:   brew install --cask chromium  (or CHROMIUM=\"/Applications/Google Chrome.app/Contents/MacOS/Google Chrome\")"
  "any:     CHROMIUM=/path/to/chromium make test"
  "To run everything but the browser tests on purpose: TANDEM_SKIP_BROWSER=1 make test"
)
