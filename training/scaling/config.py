"""Configs of `llmforge train sweep` and `llmforge train ablate`, and their expansion into runs.

A sweep or an ablation is a list of small pretraining runs that differ in the model's shape,
the token budget, the shard directory and the seed; everything else comes from `base`, the
sections of `training.config.PretrainConfig` shared by every run (model fields other than the
shape, data options other than the shards, optim, train). Each run's step count follows from
its token budget, D = steps x global batch x seq_len; it validates at the end (so its last
metrics row carries `val_loss`), warms up for `warmup_fraction` of its steps and decays its
cosine schedule to its own end (Chinchilla: a schedule longer than the run overestimates the
loss).

Expansion (`sweep_runs`, `ablate_runs`) builds and preflights every run's config (shards,
vocabulary, sequence length) before anything starts; a bad value is a ConfigError naming it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from llmforge.common.config import ConfigError, StrictModel, format_validation_error
from llmforge.common.resume import fingerprint
from training.config import DataConfig, LoopConfig, OptimConfig, PretrainConfig, preflight
from training.model import ModelConfig, count_parameters

FLOPS_PER_PARAM_TOKEN = 6.0


class ModelShape(StrictModel):
    """One model size of a sweep: the decoder's width and depth (the rest comes from base.model)."""

    dim: int = Field(gt=0, description="hidden size")
    n_layers: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    n_kv_heads: int | None = Field(default=None, gt=0, description="None = n_heads")
    ffn_dim: int | None = Field(default=None, gt=0, description="SwiGLU hidden size; None = 8/3 dim rounded up to "
                                "a multiple of 16 (Llama's ratio; ModelConfig's rounding to 256 would swamp "
                                "the small widths of a sweep)")

    def fields(self) -> dict[str, int | None]:
        ffn = self.ffn_dim or 16 * math.ceil(8 * self.dim / 3 / 16)
        return {"dim": self.dim, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "n_kv_heads": self.n_kv_heads, "ffn_dim": ffn}


class DataTemplate(DataConfig):
    shards: str | None = Field(default=None, description="set per run (the sweep's or ablation's shards)")


class RunTemplate(StrictModel):
    """What every run starts from: PretrainConfig's model (shape set per run), data (shards set
    per run), optim and train (max_steps, eval_every and seed set per run)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataTemplate = Field(default_factory=DataTemplate)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: LoopConfig = Field(default_factory=LoopConfig)

    @model_validator(mode="after")
    def _held_out(self) -> "RunTemplate":
        if self.data.val_fraction <= 0 and not self.data.val_shards:
            raise ValueError("data.val_fraction must be > 0 (or data.val_shards set): runs are compared by "
                             "their final validation loss")
        return self


class RunsConfig(StrictModel):
    """What sweeps and ablations share: the template, where runs go, how each is placed."""

    output: str = Field(description="directory: runs/<name>/ per run, results.json, runs.parquet, plots")
    base: RunTemplate = Field(default_factory=RunTemplate)
    warmup_fraction: float | None = Field(default=0.1, ge=0.0, lt=1.0, description="warmup steps as a fraction "
                                          "of each run's steps; None = base.optim.warmup_steps")
    min_steps: int = Field(default=10, gt=0, description="runs whose budget gives fewer optimizer steps are "
                           "skipped (listed in results.json)")
    cpus_per_run: float = Field(default=1, gt=0, description="CPUs of each run's Ray task (its torch threads)")
    gpus_per_run: float = Field(default=0, ge=0, le=1, description="GPUs of each run's Ray task (0 = CPU)")

    @field_validator("output")
    @classmethod
    def _local(cls, value: str) -> str:
        if "://" in value:
            raise ValueError("must be a local or shared directory (runs read their metrics back from it)")
        return value


class RunPoint(StrictModel):
    """One extra run: a model of `models` at a token budget (e.g. a larger held-out run)."""

    model: str
    tokens: float = Field(gt=0)


# A CPU-sized default: 3e13 FLOPs is minutes per run on a few cores, seconds on a GPU.
DEFAULT_FLOPS = (3e12, 1e13, 3e13)
DEFAULT_MODELS = {
    "d64-l2": ModelShape(dim=64, n_layers=2, n_heads=4),
    "d96-l3": ModelShape(dim=96, n_layers=3, n_heads=4),
    "d128-l4": ModelShape(dim=128, n_layers=4, n_heads=4),
    "d192-l6": ModelShape(dim=192, n_layers=6, n_heads=6),
    "d256-l8": ModelShape(dim=256, n_layers=8, n_heads=8),
}


class SweepConfig(RunsConfig):
    """Model sizes x token budgets (`tokens`), isoFLOP groups (`flops`: each budget C with every
    model at D = C / (6 N)) and single `points`, each for every seed."""

    shards: str = Field(description="token shard directory every run trains on")
    models: dict[str, ModelShape] = Field(default_factory=lambda: dict(DEFAULT_MODELS), min_length=1)
    tokens: list[float] = Field(default_factory=list, description="token budgets D: every model at each")
    flops: list[float] | None = Field(default=None, description="isoFLOP budgets C: every model at D = C / (6 N); "
                                      "None = DEFAULT_FLOPS when neither tokens nor points are given, else none")
    points: list[RunPoint] = Field(default_factory=list)
    params: Literal["total", "non_embedding"] = Field(
        default="total", description="N of the law and of C = 6ND: all parameters (Chinchilla) or without the "
        "embedding (Kaplan et al.; the output projection counts either way)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("tokens", "flops")
    @classmethod
    def _positive(cls, value: list[float] | None) -> list[float] | None:
        if any(not (v > 0 and math.isfinite(v)) for v in value or ()):
            raise ValueError("budgets must be positive numbers")
        return value

    @model_validator(mode="after")
    def _some_runs(self) -> "SweepConfig":
        for p in self.points:
            if p.model not in self.models:
                raise ValueError(f"points: model {p.model!r} is not one of models ({', '.join(self.models)})")
        if not (self.tokens or self.flop_budgets() or self.points):
            raise ValueError("nothing to run: set tokens, flops or points")
        return self

    def flop_budgets(self) -> list[float]:
        if self.flops is None:
            return [] if (self.tokens or self.points) else list(DEFAULT_FLOPS)
        return list(self.flops)


class AblateConfig(RunsConfig):
    """One model at one token budget on each shard directory, for several seeds."""

    shards: list[str] = Field(min_length=2, description="shard directories to compare")
    labels: list[str] | None = Field(default=None, description="one per shard directory; None = their names")
    model: ModelShape = Field(default_factory=lambda: ModelShape(dim=128, n_layers=4, n_heads=4))
    tokens: float = Field(default=2_000_000, gt=0, description="training tokens of every run")
    seeds: int = Field(default=3, gt=0, description="runs per shard directory (seeds 0..seeds-1: weights and "
                       "data order)")

    @model_validator(mode="after")
    def _labels(self) -> "AblateConfig":
        if self.labels is not None:
            if len(self.labels) != len(self.shards):
                raise ValueError(f"labels: {len(self.labels)} given for {len(self.shards)} shard directories")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("labels must be distinct")
        return self

    def shard_labels(self) -> list[str]:
        if self.labels is not None:
            return list(self.labels)
        parts = [Path(s).resolve().parts for s in self.shards]
        for depth in range(1, max(len(p) for p in parts) + 1):
            labels = ["/".join(p[-depth:]) for p in parts]
            if len(set(labels)) == len(labels):
                return labels
        return [f"{i}:{s}" for i, s in enumerate(self.shards)]


@dataclass
class RunSpec:
    """One run: its checked config and what the results table records about it."""

    name: str
    config: PretrainConfig  # after preflight
    model: str
    seed: int
    tokens: int  # D actually trained: steps x global batch x seq_len
    steps: int
    params: int
    params_non_embedding: int
    group_flops: float | None = None  # the isoFLOP budget the run belongs to
    label: str | None = None  # ablation: the shard directory's label

    @property
    def shards(self) -> str:
        return self.config.data.shards

    def flops(self, params: str = "total") -> float:
        n = self.params if params == "total" else self.params_non_embedding
        return FLOPS_PER_PARAM_TOKEN * n * self.tokens


def _short(x: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in text)


def tokens_per_step(base: RunTemplate) -> int:
    return (base.train.global_batch_size or base.train.micro_batch_size) * base.data.seq_len


def _fingerprint_of(raw: dict) -> str:
    """What makes a run's result: not where it runs nor how often it logs."""
    train = {k: v for k, v in raw["train"].items() if k not in ("threads", "log_every", "checkpoint_every", "device")}
    return fingerprint({"model": raw["model"], "data": raw["data"], "optim": raw["optim"], "train": train}, digits=8)


def build_run(cfg: RunsConfig, shards: str, shape: ModelShape, steps: int, seed: int, prefix: str,
              preflighted: dict[str, PretrainConfig]) -> tuple[str, PretrainConfig]:
    """(run name, its preflighted PretrainConfig). `preflighted` caches one check per shard dir."""
    base = cfg.base
    model = {**base.model.model_dump(exclude={"preset"}, exclude_unset=True), **shape.fields()}
    warmup = base.optim.warmup_steps if cfg.warmup_fraction is None else int(round(cfg.warmup_fraction * steps))
    raw = {
        "model": model,
        "data": {**base.data.model_dump(exclude_unset=True), "shards": str(Path(shards).resolve()), "seed": seed},
        "optim": {**base.optim.model_dump(exclude_unset=True), "warmup_steps": min(warmup, steps - 1)},
        "train": {**base.train.model_dump(exclude_unset=True), "max_steps": steps, "eval_every": steps, "seed": seed},
    }
    name = _safe(f"{prefix}_s{seed}_{_fingerprint_of(raw)}")
    raw["scaling"] = {"num_workers": 1, "cpus_per_worker": cfg.cpus_per_run, "use_gpu": cfg.gpus_per_run > 0}
    raw["run"] = {"storage_path": str(Path(cfg.output).resolve() / "runs"), "name": name, "num_to_keep": 1,
                  "max_failures": 0}
    try:
        run_cfg = PretrainConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"of run {name} (base + its model, shards and steps)",
                                                  PretrainConfig)) from None
    key = run_cfg.data.shards
    if key not in preflighted:
        preflighted[key] = preflight(run_cfg)
    checked = preflighted[key]
    # preflight's findings (vocabulary, tokenizer) apply to every run on these shards
    update = {"data": run_cfg.data.model_copy(update={"tokenizer": checked.data.tokenizer})}
    if "vocab_size" not in run_cfg.model.model_fields_set:
        update["model"] = run_cfg.model.model_copy(update={"vocab_size": checked.model.vocab_size})
    elif run_cfg.model.vocab_size < checked.model.vocab_size:
        preflight(run_cfg)  # raises naming the key
    return name, run_cfg.model_copy(update=update)


def _spec(cfg: RunsConfig, shards: str, model_name: str, shape: ModelShape, tokens: float, seed: int,
          prefix: str, preflighted: dict, group: float | None = None,
          label: str | None = None) -> tuple[RunSpec | None, str | None]:
    """(spec, None) or (None, why it is skipped)."""
    per_step = tokens_per_step(cfg.base)
    steps = int(round(tokens / per_step))
    if steps < cfg.min_steps:
        return None, (f"{prefix} (seed {seed}): {tokens:.3g} tokens are {steps} steps of {per_step} tokens, "
                      f"fewer than min_steps {cfg.min_steps}")
    name, run_cfg = build_run(cfg, shards, shape, steps, seed, prefix, preflighted)
    return RunSpec(name=name, config=run_cfg, model=model_name, seed=seed, tokens=steps * per_step, steps=steps,
                   params=count_parameters(run_cfg.model),
                   params_non_embedding=count_parameters(run_cfg.model, include_embedding=False),
                   group_flops=group, label=label), None


def _params_of(cfg: RunsConfig, shape: ModelShape, shards: str, preflighted: dict, which: str) -> int:
    _, run_cfg = build_run(cfg, shards, shape, max(cfg.min_steps, 2), 0, "probe", preflighted)
    return count_parameters(run_cfg.model, include_embedding=which == "total")


def sweep_runs(cfg: SweepConfig) -> tuple[list[RunSpec], list[str]]:
    """Every run of the sweep (checked) and the runs skipped with the reason."""
    pre: dict[str, PretrainConfig] = {}
    specs, skipped = [], []
    for seed in cfg.seeds:
        for model_name, shape in cfg.models.items():
            for d in cfg.tokens:
                specs.append(_spec(cfg, cfg.shards, model_name, shape, d, seed, f"{model_name}_D{_short(d)}", pre))
            for c in cfg.flop_budgets():
                n = _params_of(cfg, shape, cfg.shards, pre, cfg.params)
                d = c / (FLOPS_PER_PARAM_TOKEN * n)
                specs.append(_spec(cfg, cfg.shards, model_name, shape, d, seed, f"{model_name}_C{_short(c)}", pre,
                                   group=c))
        for p in cfg.points:
            specs.append(_spec(cfg, cfg.shards, p.model, cfg.models[p.model], p.tokens, seed,
                               f"{p.model}_D{_short(p.tokens)}", pre))
    runs = {}
    for spec, why in specs:
        if spec is None:
            skipped.append(why)
        elif spec.name not in runs:  # a grid point and an explicit point can be the same run
            runs[spec.name] = spec
        elif spec.group_flops is not None:
            runs[spec.name].group_flops = spec.group_flops
    if not runs:
        raise ConfigError("no run left to do: every budget gives fewer than min_steps steps\n  " + "\n  ".join(skipped))
    return list(runs.values()), skipped


def ablate_runs(cfg: AblateConfig) -> tuple[list[RunSpec], list[str]]:
    pre: dict[str, PretrainConfig] = {}
    specs, skipped = [], []
    for label, shards in zip(cfg.shard_labels(), cfg.shards):
        if not Path(shards).is_dir():
            raise ConfigError(f"shards: {shards}: no such directory")
        for seed in range(cfg.seeds):
            spec, why = _spec(cfg, shards, "model", cfg.model, cfg.tokens, seed, _safe(label), pre, label=label)
            if spec is None:
                raise ConfigError(f"tokens: {why}")
            specs.append(spec)
    return specs, skipped
