#!/usr/bin/env bash
# The peer for benchmarks: datatrove 0.10.1 (+ what its WARC/Trafilatura/filters import) in .venv-peer,
# kept apart from llmforge's venv so neither constrains the other's dependencies.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv-peer/bin/python ] || python3 -m venv .venv-peer
.venv-peer/bin/pip install -q --disable-pip-version-check \
  "datatrove[processing]==0.10.1" faust-cchardet python-magic orjson spacy lxml_html_clean psutil warcio
echo "peer: datatrove $(.venv-peer/bin/python -c 'import datatrove, importlib.metadata as m; print(m.version("datatrove"))'), trafilatura $(.venv-peer/bin/python -c 'import importlib.metadata as m; print(m.version("trafilatura"))')"
