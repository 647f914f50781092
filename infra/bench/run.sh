#!/usr/bin/env bash
# One command per benchmark: sets up llmforge (+ the bench extra), then runs it and prints ratios.
#   bash infra/bench/run.sh [data] ARGS      llmforge vs datatrove and NeMo Curator (own venvs), the data first half
#   bash infra/bench/run.sh fixed ARGS       the data job's fixed cost (tiny input): embedded Ray, a running Ray, plain loop
#   bash infra/bench/run.sh minhash ARGS     MinHash signatures vs datasketch, full dedup on Ray
#   bash infra/bench/run.sh tokenize ARGS    BatchTokenizer vs tokenizers' encode_batch
#   bash infra/bench/run.sh train ARGS       DeepSpeed ZeRO loop vs plain PyTorch
#   bash infra/bench/run.sh eval ARGS        llmforge eval mc vs lm-evaluation-harness (hf), items/s
#   bash infra/bench/run.sh align ARGS       align dpo|sft vs TRL's DPOTrainer / SFTTrainer
#   bash infra/bench/run.sh rl ARGS          rollout KV cache vs recompute; align grpo vs TRL's GRPOTrainer
#   bash infra/bench/run.sh stages ARGS      extraction vs resiliparse (pages/s), ms/doc per filter stage
#   bash infra/bench/run.sh deep ARGS        extraction on pages nested too deep, and the nesting cap's cost on real pages
set -euo pipefail
cd "$(dirname "$0")/../.."
which=data
case "${1:-}" in data|fixed|minhash|tokenize|train|eval|align|rl|stages|deep) which=$1; shift ;; esac
EXTRAS=test,bench bash infra/setup.sh >/dev/null
[ "$which" = stages ] && bash infra/bench/setup_peer.sh  # resiliparse, the extraction peer
if [ "$which" = data ]; then
  bash infra/bench/setup_peer.sh
  # NeMo Curator is an optional peer: a failed install is reported and the bench runs without it.
  if ! out=$(bash infra/bench/setup_curator.sh 2>&1); then
    echo "curator: setup failed, running without it: $(printf '%s\n' "$out" | grep -v '^\s*$' | tail -n 3)" >&2
  else
    printf '%s\n' "$out" | tail -n 1
  fi
fi
[ "$which" = fixed ] && which=fixed_cost
[ "$which" = deep ] && which=deep_pages
exec .venv/bin/python "infra/bench/bench_$which.py" "$@"
