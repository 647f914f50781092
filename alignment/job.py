"""`llmforge align sft|reward|dpo`: check, prepare, (DPO: reference pass), train, report.

    <output>/config.yaml          the resolved config the run trained with
    <output>/examples/            tokenized train/held-out examples (alignment.examples)
    <output>/reference_logps/     DPO's cached reference log-probs (alignment.reference)
    <output>/checkpoint_*/        llmforge checkpoints (`llmforge train export|sample` take <output>)
    <output>/metrics.jsonl, loss.png, results.json

Everything that can fail without a worker fails first: the model and its tokenizer, the data
file (every row is read and tokenized on the driver), the reference. The training itself is
`training.trainer.run_training` with the algorithm's task: the pretraining loop, DeepSpeed,
Ray Train, checkpoints and exact resume, unchanged.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from llmforge.common.errors import ConfigError

ALGORITHMS = {
    "sft": ("alignment.config:SFTConfig", "alignment.sft:SFTTask", "sft"),
    "reward": ("alignment.config:RewardConfig", "alignment.reward:RewardTask", "pairs"),
    "dpo": ("alignment.config:DPOConfig", "alignment.dpo:DPOTask", "pairs"),
}


def config_class(algorithm: str):
    import importlib

    module, _, name = ALGORITHMS[algorithm][0].partition(":")
    return getattr(importlib.import_module(module), name)


def output_dir(cfg) -> Path:
    from training.trainer import run_dir

    return run_dir(cfg)


def _tokenizer(cfg, source) -> Path:
    """The policy's tokenizer; a different one given in data.tokenizer is refused (the ids would
    mean other strings to the model)."""
    from llmforge.common.resume import file_digest

    own = source.tokenizer_path
    if cfg.data.tokenizer:
        given = Path(cfg.data.tokenizer)
        if not given.exists():
            raise ConfigError(f"data.tokenizer {given}: no such file")
        if own is not None and file_digest(own) != file_digest(given):
            raise ConfigError(f"data.tokenizer {given} (sha256 {file_digest(given)}) is not the tokenizer of "
                              f"--model {cfg.model} (sha256 {file_digest(own)})")
        return given
    if own is None:
        raise ConfigError(f"--model {cfg.model} has no tokenizer.json next to its weights; set data.tokenizer")
    return own


def _check_reference(cfg, policy, tokenizer: Path):
    """The reference (DPO) as a ModelSource: same tokenizer and vocabulary as the policy."""
    from llmforge.common.resume import file_digest
    from training.sources import resolve_model

    ref = resolve_model(cfg.reference) if cfg.reference else policy
    if ref.kind != "causal_lm":
        raise ConfigError(f"reference {ref.path} is a {ref.kind} model; DPO's reference is a causal LM")
    if ref is not policy:
        mine = file_digest(tokenizer)
        theirs = file_digest(ref.tokenizer_path) if ref.tokenizer_path else None
        if theirs != mine:
            raise ConfigError(f"reference {ref.path} has tokenizer sha256 {theirs}, the policy's is {mine}: "
                              f"log-probs of other token ids cannot be compared")
        if ref.config.vocab_size != policy.config.vocab_size:
            raise ConfigError(f"reference vocab_size {ref.config.vocab_size} != policy vocab_size "
                              f"{policy.config.vocab_size}")
    return ref


def run_align(algorithm: str, cfg, standalone: bool = False, log=print, step_hooks=()) -> dict[str, Any]:
    """Run one alignment job to the end (resuming a killed one); returns results.json's content."""
    import yaml

    from alignment.examples import prepare_examples
    from training.chat import ChatTokenizer
    from training.sources import resolve_model
    from training.trainer import run_training

    _, task, kind = ALGORITHMS[algorithm]
    out = output_dir(cfg)
    policy = resolve_model(cfg.model)
    wanted = {"sft": ("causal_lm",), "dpo": ("causal_lm",), "reward": ("causal_lm", "reward")}[algorithm]
    if policy.kind not in wanted:
        raise ConfigError(f"--model {cfg.model} is a {policy.kind} model; {algorithm} starts from a "
                          f"{' or '.join(wanted)}")
    tokenizer = _tokenizer(cfg, policy)
    chat = ChatTokenizer.from_file(str(tokenizer))
    vocab = chat.tokenizer.get_vocab_size()
    if vocab > policy.config.vocab_size:
        raise ConfigError(f"tokenizer {tokenizer} has {vocab} tokens, more than the model's vocab_size "
                          f"{policy.config.vocab_size}")
    max_len = cfg.data.max_len or policy.config.max_seq_len
    if max_len > policy.config.max_seq_len:
        raise ConfigError(f"data.max_len {max_len} exceeds the model's max_seq_len {policy.config.max_seq_len}")
    reference = _check_reference(cfg, policy, tokenizer) if algorithm == "dpo" else None

    out.mkdir(parents=True, exist_ok=True)
    prepared = prepare_examples(kind, cfg, chat, tokenizer, max_len, out, log)
    if reference is not None and cfg.reference_mode == "precomputed":
        from alignment.reference import compute_reference_logps

        compute_reference_logps(out, str(reference.path), reference.weights_hash(), prepared.record["fingerprint"],
                                chat.pad_id, cfg.reference_batch_size, cfg.reference_concurrency,
                                num_cpus=cfg.scaling.cpus_per_worker, log=log)

    if cfg.train.max_steps is None:
        steps = cfg.epochs * math.ceil(prepared.n_train / cfg.global_batch(cfg.scaling.num_workers))
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": steps})})
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    log(f"{algorithm}: {prepared.n_train} examples, {cfg.train.max_steps} steps of "
        f"{cfg.global_batch(cfg.scaling.num_workers)} -> {out}")
    last = run_training(cfg, task, out, standalone=standalone, log=log, step_hooks=step_hooks)
    if not last:  # a rerun of a finished run trains no step: report what the run logged
        from training.trainer import read_metrics

        rows = read_metrics(out / "metrics.jsonl")
        last = rows[-1] if rows else {}
    results = {"algorithm": algorithm, "model": str(policy.path), "output": str(out),
               "examples": prepared.record["examples"], "source": prepared.record["source"],
               "tokenize": prepared.record["tokenize"], "steps": cfg.train.max_steps,
               "final": {k: v for k, v in (last or {}).items() if isinstance(v, (int, float))}}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    final = results["final"]
    shown = {k: round(final[k], 4) for k in ("loss", "val_loss", "val_accuracy", "val_margin") if k in final}
    log(f"{algorithm}: done; {shown}; results {out / 'results.json'}")
    return results
