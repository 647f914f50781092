"""The dependency direction of ../shared/DESIGN.md, checked on every import statement
(function-level lazy imports included): data -> shard format -> training -> alignment /
evaluation; shared plumbing imports none of the packages; nothing imports the CLI."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dataproc", "training", "alignment", "evaluation", "llmforge")
# package (or module path prefix) -> top-level modules it must never import
FORBIDDEN = {
    "dataproc": {"training", "alignment", "evaluation", "torch", "deepspeed"},
    "training": {"dataproc", "alignment", "evaluation"},
    "evaluation": {"alignment", "dataproc"},
    "alignment": {"dataproc", "evaluation"},
    # shared plumbing: the config base, fs, Ray session, metrics, the shard format
    "llmforge/common": {"dataproc", "training", "alignment", "evaluation", "torch"},
    "llmforge/shard_format.py": {"dataproc", "training", "alignment", "evaluation", "torch", "ray", "tokenizers"},
    # the n-gram overlap both the decontaminate stage and `eval contamination` use
    "llmforge/ngram_overlap.py": {"dataproc", "training", "alignment", "evaluation", "torch", "ray", "tokenizers"},
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def violations(files: list[Path], root: Path = ROOT) -> list[str]:
    bad = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        rules = set().union(*(mods for prefix, mods in FORBIDDEN.items() if rel.startswith(prefix)))
        for line, module in imports_of(path):
            top = module.split(".")[0]
            if top in rules:
                bad.append(f"{rel}:{line} imports {module}")
            if (module == "llmforge.cli" or module.startswith("llmforge.cli.")) and not rel.startswith("llmforge/cli"):
                bad.append(f"{rel}:{line} imports the CLI ({module})")
    return bad


def test_every_package_is_checked():
    files = source_files()
    assert {p.relative_to(ROOT).parts[0] for p in files} >= {"dataproc", "training", "llmforge"}
    assert len(files) > 50


def test_imports_run_one_way():
    assert violations(source_files()) == []


@pytest.mark.parametrize("rel, source, expected", [
    ("dataproc/x.py", "def f():\n    import torch\n", "dataproc/x.py:2 imports torch"),
    ("training/x.py", "from dataproc.reading import inputs\n", "training/x.py:1 imports dataproc.reading"),
    ("llmforge/common/x.py", "import training.model\n", "llmforge/common/x.py:1 imports training.model"),
    ("evaluation/x.py", "from llmforge.cli import main\n", "evaluation/x.py:1 imports the CLI (llmforge.cli)"),
])
def test_the_check_catches_a_violation(tmp_path, rel, source, expected):
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_text(source)
    assert violations([path], root=tmp_path) == [expected]
