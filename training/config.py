"""The pretraining job's config: one YAML with `model`, `data`, `optim`, `train`, `scaling`, `run`.

Everything that can be checked without a worker is checked in `preflight` (shards exist and
agree with the model's vocabulary, the batch divides over the workers), so a bad config stops
before Ray Train starts anything, naming the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from llmforge.common.config import ConfigError, StrictModel
from training.model import ModelConfig


class DataConfig(StrictModel):
    shards: str = Field(description="token shard directory (a data run's shards/, with manifest.json)")
    val_shards: str | None = Field(default=None, description="held-out shard directory; None = the last "
                                   "val_fraction of `shards`")
    tokenizer: str | None = Field(default=None, description="tokenizer.json of the shards (copied into "
                                  "checkpoints for export); None = found next to the shards")
    seq_len: int = Field(default=256, gt=0, description="tokens per training sequence")
    val_fraction: float = Field(default=0.01, ge=0.0, lt=1.0)
    seed: int = 0


class OptimConfig(StrictModel):
    """AdamW with warmup then cosine, warmup-stable-decay (WSD) or constant; nanoGPT/Llama defaults."""

    lr: float = Field(default=6e-4, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0, description="final lr as a fraction of lr")
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = Field(default=100, ge=0)
    decay_fraction: float = Field(default=0.2, gt=0.0, le=1.0, description="wsd: last fraction of steps decaying")
    weight_decay: float = Field(default=0.1, ge=0.0)
    beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    beta2: float = Field(default=0.95, ge=0.0, lt=1.0)
    eps: float = Field(default=1e-8, gt=0)
    grad_clip: float = Field(default=1.0, ge=0.0, description="max global grad norm; 0 = off")


class LoopConfig(StrictModel):
    max_steps: int = Field(default=1000, gt=0, description="optimizer steps")
    micro_batch_size: int = Field(default=8, gt=0, description="sequences per worker per forward")
    global_batch_size: int | None = Field(
        default=None, gt=0, description="sequences per optimizer step over all workers; None = micro x workers. "
        "Gradient accumulation is global / (micro x workers), so a run resumed on another worker count "
        "sees exactly the same batches")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto = bf16 on GPUs, fp32 on CPUs (most CPUs without AMX run bf16 "
        "matmuls two orders of magnitude slower than fp32)")
    zero_stage: Literal[0, 1, 2, 3] = 2
    compile: bool = Field(default=False, description="torch.compile the model")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(default=None, gt=0, description="torch intra-op threads per worker (CPU); "
                                "None = the worker's CPUs")
    log_every: int = Field(default=10, gt=0)
    eval_every: int = Field(default=200, ge=0, description="0 = no validation")
    eval_batches: int = Field(default=8, gt=0)
    checkpoint_every: int = Field(default=200, ge=0, description="0 = only at the end")
    seed: int = 0


class ScalingOptions(StrictModel):
    num_workers: int = Field(default=1, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1, gt=0)
    resources_per_worker: dict[str, float] = Field(default_factory=dict, description="extra custom resources")


class RunOptions(StrictModel):
    storage_path: str = Field(default="runs/train", description="local dir or s3:// / gs:// URI")
    name: str = "pretrain"
    max_failures: int = Field(default=2, ge=-1, description="worker-group restarts from the last checkpoint; -1 = unlimited")
    num_to_keep: int | None = Field(default=2, gt=0, description="checkpoints kept; None = all")
    tensorboard: bool = Field(default=False, description="also write TensorBoard events to <run dir>/tensorboard")


class TrainJobConfig(StrictModel):
    """What every training job shares (pretraining, SFT, reward model, DPO): the optimizer, the
    loop, the workers and the run. Each job adds its model and data sections."""

    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: LoopConfig = Field(default_factory=LoopConfig)
    scaling: ScalingOptions = Field(default_factory=ScalingOptions)
    run: RunOptions = Field(default_factory=RunOptions)

    def _check_loop(self) -> None:
        if self.train.precision == "fp16" and (self.train.device == "cpu" or
                                               (self.train.device == "auto" and not self.scaling.use_gpu)):
            raise ValueError("train.precision fp16 needs a GPU (DeepSpeed's CPU accelerator has no fp16); use fp32 or bf16 "
                             "(or scaling.use_gpu: true)")
        self.grad_accum(self.scaling.num_workers)  # raises on a batch that does not divide

    def precision_on(self, device_type: str) -> str:
        if self.train.precision != "auto":
            return self.train.precision
        return "bf16" if device_type == "cuda" else "fp32"

    def global_batch(self, world_size: int) -> int:
        return self.train.global_batch_size or self.train.micro_batch_size * world_size

    def grad_accum(self, world_size: int) -> int:
        per_step = self.train.micro_batch_size * world_size
        total = self.global_batch(world_size)
        if total % per_step:
            raise ValueError(f"train.global_batch_size {total} is not a multiple of train.micro_batch_size "
                             f"{self.train.micro_batch_size} x {world_size} workers")
        return total // per_step


class PretrainConfig(TrainJobConfig):
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(preset="tiny"))
    data: DataConfig

    @model_validator(mode="after")
    def _fits(self) -> "PretrainConfig":
        if self.data.seq_len > self.model.max_seq_len:
            raise ValueError(f"data.seq_len {self.data.seq_len} is larger than model.max_seq_len "
                             f"{self.model.max_seq_len}")
        self._check_loop()
        return self


def preflight(cfg: PretrainConfig) -> PretrainConfig:
    """Check the config against the shards; returns it with model.vocab_size taken from the
    shards when the YAML did not set it. Raises ConfigError naming the key."""
    from llmforge import shard_format

    manifests = {}
    for key in ("shards", "val_shards"):
        path = getattr(cfg.data, key)
        if path is None:
            continue
        try:
            manifests[key] = shard_format.read_manifest(path)
        except FileNotFoundError as err:
            raise ConfigError(f"data.{key}: {err}") from None
    manifest = manifests["shards"]
    if manifest.get("document_boundary_token_id") is None:
        raise ConfigError(f"data.shards: {cfg.data.shards} has no document boundary token (tokenized with "
                          f"append_eos: false); packed sequences would run documents together")
    shard_vocab = int(manifest["vocab_size"])
    if "vocab_size" not in cfg.model.model_fields_set:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"vocab_size": shard_vocab})})
    elif cfg.model.vocab_size < shard_vocab:
        raise ConfigError(f"model.vocab_size {cfg.model.vocab_size} is smaller than the shards' vocabulary "
                          f"{shard_vocab} ({cfg.data.shards}): token ids would index past the embedding")
    if "val_shards" in manifests and manifests["val_shards"].get("tokenizer_sha256") != manifest.get("tokenizer_sha256"):
        raise ConfigError("data.val_shards were made with another tokenizer than data.shards")
    if cfg.data.tokenizer:
        try:
            shard_format.check_tokenizer_matches(manifest, cfg.data.tokenizer)
        except (ValueError, FileNotFoundError, OSError) as err:
            raise ConfigError(f"data.tokenizer: {err}") from None
    else:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"tokenizer": _find_tokenizer(cfg.data.shards, manifest)})})
    needed = cfg.data.seq_len + 1
    if manifest["total_tokens"] < needed * 2:
        raise ConfigError(f"data.shards: {manifest['total_tokens']} tokens is too few for data.seq_len "
                          f"{cfg.data.seq_len} (need at least two sequences)")
    return cfg


def _find_tokenizer(shards: str, manifest: dict) -> str | None:
    """tokenizer.json in the shard dir (tokenize-text) or its parent (data run), if it is the
    one the shards were made with."""
    from llmforge import shard_format

    if "://" in shards:
        return None
    for candidate in (Path(shards) / shard_format.TOKENIZER_FILE, Path(shards).parent / shard_format.TOKENIZER_FILE):
        if candidate.exists():
            try:
                shard_format.check_tokenizer_matches(manifest, str(candidate))
                return str(candidate.resolve())
            except ValueError:
                continue
    return None
