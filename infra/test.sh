#!/usr/bin/env bash
# The README's test command: set up, then run the whole suite (tests needing ../shared/data skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0
exec python -m pytest -q "$@"
