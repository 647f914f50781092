#!/usr/bin/env bash
# One command for the benchmarks: sets up llmforge and the datatrove peer, runs both, prints ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash infra/setup.sh >/dev/null
bash infra/bench/setup_peer.sh
exec .venv/bin/python infra/bench/bench_data.py "$@"
