#!/usr/bin/env bash
# Create .venv and install llmforge with pinned deps. Idempotent: a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1 RAY_USAGE_STATS_ENABLED=0
# torch first, pinned to the CPU build: anything unpinned pulls a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || pip install -q -c infra/constraints.txt torch
# DeepSpeed builds a pure-Python wheel (no CUDA ops) against the torch above.
# EXTRAS=test,bench also installs the benchmark peers (infra/bench/run.sh does).
DS_BUILD_OPS=0 pip install -q -c infra/constraints.txt -e ".[${EXTRAS:-test}]"
# DeepSpeed compiles its CPU comm op on first use (about a minute on 2 cores): here, once per venv.
python -m training.ds_ops
echo "setup: $(python --version), torch $(python -c 'import torch; print(torch.__version__)'), ray $(python -c 'import ray; print(ray.__version__)')"
