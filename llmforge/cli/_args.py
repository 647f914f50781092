"""What the area modules share: `--config`/`--set`, flags -> typed options, path checks.

Light on purpose (argparse and the error class only): building the parser imports this.
Defaults live in one place, the options model or the called function: a flag the user did
not give is None here and is left out, so the model's or function's own default applies.
"""
from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
from pathlib import Path
from typing import Any, Mapping

from llmforge.common.errors import UserError


def key_value(item: str) -> tuple[str, Any, str]:
    """argparse type of `--set KEY=VALUE`: (dotted key, YAML-parsed value, the item as typed)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
    import yaml

    try:
        return key, yaml.safe_load(value), item
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"{item!r}: the value is not YAML ({err})") from None


def add_config_args(p: argparse.ArgumentParser, config_help: str, set_example: str, required: bool = True) -> None:
    """`--config FILE` (required unless `required=False`: then the options model's defaults
    are the starting point) and repeatable `--set KEY=VALUE`."""
    p.add_argument("--config", required=required, help=config_help)
    p.add_argument("--set", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help=f"override a config key (YAML value; repeatable), e.g. --set {set_example}")


MODEL_HELP = "an llmforge checkpoint, run directory (its latest checkpoint) or Hugging Face directory, with tokenizer.json"


def add_model_arg(p: argparse.ArgumentParser) -> None:
    """`--model PATH` of the verbs that run a model (generate, eval ...)."""
    p.add_argument("--model", required=True, help=MODEL_HELP)


def load_with_overrides(model, args: argparse.Namespace, flags: list[tuple[str, Any, str]] = ()):
    """`model` from `args.config` (None: the model's defaults), then each `--set`, then `flags`
    ((key, value, label) of the verb's own flags, e.g. ("output.path", "out/", "--output out/")).
    Errors name the flag."""
    from llmforge.common.config import load_config

    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value, label in [*((k, v, f"--set {item}") for k, v, item in args.set), *flags]:
        overrides[key] = value
        sources[key] = label
    return load_config(model, args.config, overrides, sources)


def run_flags(args: argparse.Namespace) -> list[tuple[str, Any, str]]:
    """The training verbs' --model, --data, --output as config overrides (after `existing` checks):
    the output directory is run.storage_path / run.name."""
    existing(args.model, "--model")
    existing(args.data, "--data")
    out = Path(args.output)
    return [("model", args.model, f"--model {args.model}"), ("data.path", args.data, f"--data {args.data}"),
            ("run.storage_path", str(out.parent), f"--output {args.output}"),
            ("run.name", out.name, f"--output {args.output}")]


def given(**values: Any) -> dict[str, Any]:
    """The keyword arguments the user gave (not None): the rest keep the callee's defaults."""
    return {k: v for k, v in values.items() if v is not None}


def from_flags(model, args: argparse.Namespace, flags: Mapping[str, str], **fixed: Any):
    """`model(**fixed, field=value of its flag...)` for the flags given; a bad value is a
    UserError naming the flag (e.g. `--top-p (SamplingParams.top_p): Input should be ...`)."""
    from pydantic import ValidationError

    values = given(**{field: getattr(args, flag.lstrip("-").replace("-", "_")) for field, flag in flags.items()})
    try:
        return model(**fixed, **values)
    except ValidationError as err:
        lines = ["invalid options:"]
        for e in err.errors():
            field = str(e["loc"][0]) if e["loc"] else ""
            name = f"{flags[field]} ({model.__name__}.{field})" if field in flags else f"{model.__name__}.{field}"
            got = f" (got {e['input']!r})" if field in flags and "input" in e else ""
            lines.append(f"  {name.rstrip('.')}: {e['msg']}{got}")
        raise UserError("\n".join(lines)) from None


def existing(paths: str | list[str] | None, flag: str) -> None:
    """A local path the user named must exist (remote URIs are checked by whoever opens them)."""
    for path in [paths] if isinstance(paths, str) else paths or []:
        if "://" not in path and not any(c in path for c in "*?[") and not Path(path).exists():
            raise UserError(f"{flag} {path}: no such file or directory")


def default_from(where: str) -> str:
    """Help text naming the default of `where` ("package.module:function.param" or
    "package.module:Model.field"), read from the module's source without importing it:
    `--help` must not load pyarrow, torch or Ray, and the default stays defined once."""
    module, _, qualname = where.partition(":")
    owner, _, name = qualname.rpartition(".")
    try:
        value = _static_default(_module_ast(module), owner, name)
    except (LookupError, ValueError, SyntaxError, OSError, ImportError):
        value = None
    return f"default: {value}" if value is not None else f"default: from {qualname}"


@functools.lru_cache(maxsize=None)
def _module_ast(module: str) -> ast.Module:
    # find_spec imports only the parent packages, whose __init__ files hold docstrings.
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(module)
    return ast.parse(Path(spec.origin).read_text())


def _static_default(tree: ast.Module, owner: str, name: str) -> str | None:
    """The default expression of parameter / field `name` of top-level `owner`, evaluated when
    it is a constant expression (`1 << 24`), else as written; None when it has none."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == owner:
            a = node.args
            positional = [*a.posonlyargs, *a.args]
            pairs = [*zip(positional[len(positional) - len(a.defaults):], a.defaults),
                     *zip(a.kwonlyargs, a.kw_defaults)]
            for arg, default in pairs:
                if arg.arg == name:
                    return _render(default)
            raise LookupError(name)
        if isinstance(node, ast.ClassDef) and node.name == owner:
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and getattr(stmt.target, "id", None) == name:
                    value = stmt.value
                    if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "Field":
                        given = {k.arg: k.value for k in value.keywords}
                        value = given.get("default", value.args[0] if value.args else None)
                    return _render(value)
            raise LookupError(name)
    raise LookupError(owner)


def _render(node: ast.expr | None) -> str | None:
    if node is None or (isinstance(node, ast.Constant) and node.value is None):
        return None
    if all(isinstance(n, (ast.Expression, ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop))
           for n in ast.walk(node)):
        return str(eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}}))
    return ast.unparse(node)
