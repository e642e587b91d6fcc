#!/usr/bin/env bash
# One command for a GPU box (see bench/gpu_suite.py): the GPU tests, the whole suite on
# cupy and torch-cuda, every benchmark with TF32 off and on; one JSON and one Markdown
# under $OUT (or bench/results). --dry-run lists the steps and checks they all exist.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu_suite.py "$@"
