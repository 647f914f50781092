"""Typed configs loaded from YAML, with errors that name the key and the reason.

Every job config is a tree of `StrictModel`s: unknown keys are errors, values are
validated when the file is loaded, before any work starts. Overrides (`--set KEY=VALUE` and
the CLI's own flags) are applied to the file's tree first; an error they cause names them.
"""
from __future__ import annotations

import copy
import difflib
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from llmforge.common.errors import ConfigError

__all__ = ["ConfigError", "StrictModel", "format_validation_error", "load_config", "set_dotted", "validate_config"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for config sections: unknown keys fail, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config sections an annotation can hold (`X`, `X | None`, `dict[str, X]`, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _section_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section class that the key path `loc` points into, or None when it is no section.
    Parts that are not field names (dict keys, list indices) stay in the current section."""
    current = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            continue
        sections = _models_in(field.annotation)
        if not sections:
            return None
        current = sections[0]
    return current


def did_you_mean(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """For an unknown key at `loc`: the closest field name of its section, if one is close."""
    if not loc or not isinstance(loc[-1], str):
        return None
    section = _section_at(model, loc[:-1])
    if section is None:
        return None
    close = difflib.get_close_matches(loc[-1], list(section.model_fields), n=1)
    return close[0] if close else None


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel] | None = None,
                            origin: Callable[[tuple[Any, ...]], str | None] | None = None) -> str:
    """One line per bad key: `key: reason`. With `model`, an unknown key gets the closest known
    one; `origin(loc)` names the override (e.g. `--set a.b=1`) a key's value came from, if any."""
    lines = []
    from_override = False
    for e in err.errors():
        loc = tuple(e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            guess = did_you_mean(model, loc) if model is not None else None
            if guess is not None:
                msg += f"; did you mean {guess!r}?"
        elif "input" in e and e["type"] not in ("missing",):
            msg = f"{msg} (got {e['input']!r})"
        where = origin(loc) if origin is not None else None
        from_override |= where is not None
        lines.append(f"  {_dotted(loc)}{f' (from {where})' if where else ''}: {msg}")
    header = f"invalid config {source}" + (" with command-line overrides:" if from_override else ":")
    return "\n".join([header, *lines])


def validate_config(model: type[M], data: dict[str, Any], source: str = "<dict>") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, model)) from None


NO_FILE = "(no config file)"


def load_config(model: type[M], path: str | Path | None, overrides: Mapping[str, Any] | None = None,
                sources: Mapping[str, str] | None = None) -> M:
    """Parse YAML at `path` into `model` (None: start from the model's defaults); `overrides`
    are dotted keys (e.g. {"output.path": "x"}), applied in order. `sources` names where an
    override came from (e.g. {"output.path": "--output x"}) for error messages; unnamed ones
    are shown as `override KEY=VALUE`."""
    path = Path(path) if path is not None else None
    try:
        raw = (yaml.safe_load(path.read_text()) or {}) if path is not None else {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: top level must be a mapping, got {type(raw).__name__}")
    overrides = dict(overrides or {})
    from_file = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        set_dotted(raw, dotted, value)
    labels = {key: (sources or {}).get(key) or f"override {key}={value!r}" for key, value in overrides.items()}

    def origin(loc: tuple[Any, ...]) -> str | None:
        parts = tuple(str(p) for p in loc)
        for key in reversed(list(labels)):  # the last override of a key is the one in effect
            key_parts = tuple(key.split("."))
            if parts[:len(key_parts)] == key_parts:
                return labels[key]  # the error is inside the overridden value
            if parts and key_parts[:len(parts)] == parts and not _has_path(from_file, parts):
                return labels[key]  # the override created this key (a misspelt section, say)
        return None

    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path) if path is not None else NO_FILE, model,
                                                  origin)) from None


def _has_path(tree: Any, parts: tuple[str, ...]) -> bool:
    for part in parts:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[leaf] = value
