#!/usr/bin/env bash
# The NeMo Curator peer for the data benchmark: nemo-curator[text-cpu] 1.4.0 (+ lxml_html_clean, which jusText
# imports: lxml 6 no longer ships lxml.html.clean) in .venv-curator, a venv of its own so that its torch,
# transformers and ray never move llmforge's. Every package pinned in infra/bench/curator-constraints.txt.
# torch goes in first and CPU-only, as in infra/setup.sh: the extra's unpinned torch pulls a CUDA build.
# About 8 minutes and 2.3 GB the first time (fasttext 0.9.3 builds from source: needs g++); seconds after.
# A failed install removes the venv, so bench_data.py, which runs curator only where
# .venv-curator/bin/python exists, goes on without it.
set -euo pipefail
cd "$(dirname "$0")/../.."
C=infra/bench/curator-constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK=1
version() { .venv-curator/bin/python -c 'import importlib.metadata as m; print(m.version("nemo-curator"))' 2>/dev/null; }
if [ "$(version)" = "$(sed -n 's/^nemo-curator==//p' "$C")" ] && .venv-curator/bin/python -c "import lxml_html_clean, justext" 2>/dev/null; then
  echo "curator: nemo-curator $(version) in .venv-curator"
  exit 0
fi
trap 'echo "curator: install failed, removing .venv-curator" >&2; rm -rf .venv-curator' ERR
[ -x .venv-curator/bin/python ] || "${PYTHON:-python3}" -m venv .venv-curator
.venv-curator/bin/pip install -q -c "$C" torch
.venv-curator/bin/pip install -q -c "$C" "nemo-curator[text-cpu]" lxml_html_clean
.venv-curator/bin/python -c "import nemo_curator.stages.text.download.base.iterator, lxml_html_clean, justext"
echo "curator: nemo-curator $(version), torch $(.venv-curator/bin/python -c 'import torch; print(torch.__version__)') in .venv-curator"
