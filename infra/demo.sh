#!/usr/bin/env bash
# The README's main-job command: set up, then `llmforge demo`: sample WARCs -> data pipeline -> pretraining ->
# SFT -> reward model -> DPO, GRPO -> evaluation report (flags pass through: --until STEP, --workdir, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0
exec llmforge demo "$@"
