#!/usr/bin/env bash
# The README's main-job command: set up, generate sample WARCs, run the data pipeline end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0
exec llmforge demo "$@"
