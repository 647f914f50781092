#!/usr/bin/env bash
# The peers for benchmarks: datatrove 0.10.1 (+ what its WARC/Trafilatura/filters import) and
# resiliparse (bench_stages' extraction peer) in .venv-peer, kept apart from llmforge's venv so
# neither constrains the other's dependencies.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv-peer/bin/python ] || python3 -m venv .venv-peer
.venv-peer/bin/pip install -q --disable-pip-version-check \
  "datatrove[processing]==0.10.1" faust-cchardet python-magic orjson spacy lxml_html_clean psutil warcio resiliparse==2.0.1
echo "peer: datatrove $(.venv-peer/bin/python -c 'import datatrove, importlib.metadata as m; print(m.version("datatrove"))'), trafilatura $(.venv-peer/bin/python -c 'import importlib.metadata as m; print(m.version("trafilatura"))')"
