#!/usr/bin/env bash
# Everything sandcell needs on a fresh Debian/Ubuntu machine with Python 3.11+:
# a virtualenv in .venv with sandcell and its test tools, then `sandcell setup`
# (bubblewrap, Node.js and the sandbox runtime image; apt packages when root).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "sandcell needs Python 3.11 or newer as \$PYTHON or python3" >&2
  exit 1
fi
if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
  else
    echo "install python3-venv (Debian/Ubuntu: sudo apt-get install python3-venv)" >&2
    exit 1
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
echo "installing sandcell; the first time this compiles llama.cpp for the local model (about 12 minutes on 2 cores)"
.venv/bin/pip install --disable-pip-version-check --progress-bar on -e '.[test,local]' \
  | { grep -v -e '^Requirement already satisfied' -e '^WARNING: Location' || true; }
.venv/bin/sandcell setup
