#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian/Ubuntu machine, then run them.
# Installs: system packages (Slurm, munge, iproute2 for the test cluster's network namespaces, Chromium,
# bubblewrap for the HumanEval sandbox, graphviz for the README's DAG command), a virtualenv in .venv with snakechat.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge iproute2 chromium chromium-driver bubblewrap graphviz >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test,hf]'
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest -q -ra "$@"
