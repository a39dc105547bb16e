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
# llama.cpp is compiled once into a wheel of our own: not for this CPU's every
# extension (-march=native picked AMX here, which dies with SIGILL in a VM that
# does not grant it), but for what any x86-64 machine of the last decade runs.
LLAMA="llama-cpp-python==0.3.36"  # the version pyproject.toml pins
WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/sandcell/wheels"
if ! ls "$WHEELS"/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
  echo "compiling llama.cpp for the local model, once (about 12 minutes on 2 cores)"
  CPU_ARGS=""
  if [ "$(uname -m)" = x86_64 ]; then
    CPU_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  fi
  CMAKE_ARGS="$CPU_ARGS" .venv/bin/pip wheel --disable-pip-version-check --no-deps --no-cache-dir -q -w "$WHEELS" "$LLAMA"
fi
echo "installing sandcell"
.venv/bin/pip install --disable-pip-version-check --progress-bar on --find-links "$WHEELS" -e '.[test,local]' \
  | { grep -v -e '^Requirement already satisfied' -e '^WARNING: Location' || true; }
.venv/bin/sandcell setup
