#!/usr/bin/env bash
# The GPU check from the project root, with or without `pip install -e .` (docs/gpu.md): bench/gpu_check.sh --out DIR/gpu_check.json
cd "$(dirname "$0")/.." && PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} exec python3 bench/gpu_check.py "$@"
