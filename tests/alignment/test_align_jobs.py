"""SFT, reward model and DPO jobs end to end on the training loop (standalone DeepSpeed, one
process; the Ray Train path is in test_align_ray.py), from a small pretrained base model."""
from __future__ import annotations

import json
import math

import pytest
import torch

from llmforge.common.errors import UserError
from tests.alignment.conftest import align_config
from tests.conftest import shared_data

QUIET = dict(log=lambda *_: None)


def _rows(run):
    from training.trainer import read_metrics

    return read_metrics(run / "metrics.jsonl")


def _heldout_loss(task_cls, cfg, run, model) -> float:
    """The task's summed held-out loss / weight for `model` (before or after training)."""
    task = task_cls(cfg, str(run))
    _, val = task.examples()
    total = weight = 0.0
    with torch.no_grad():
        for start in range(0, len(val), 8):
            idx = list(range(start, min(start + 8, len(val))))
            batch = {k: torch.from_numpy(v) for k, v in val.batch(idx).items()}
            loss, _ = task.loss(model, batch)
            total, weight = total + float(loss), weight + val.weight(idx)
    return total / weight


@pytest.mark.shared_data
def test_sft_on_alpaca_lowers_heldout_loss_and_ends_turns(base_model, tmp_path):
    from alignment.job import run_align
    from alignment.sft import SFTTask
    from training.batch_generate import GenerateOptions, generate_texts
    from training.sources import load_for_inference

    data = shared_data("preference_sft", "llamafactory_alpaca_en_demo.json")
    run = tmp_path / "sft"
    cfg = align_config("sft", base_model, data, run, **{"optim.lr": 2e-3, "data.max_len": 384,
                                                       "train.micro_batch_size": 8})
    results = run_align("sft", cfg, standalone=True, **QUIET)
    assert results["examples"]["val"] >= 20 and results["source"]["read"] == 999
    before, _ = load_for_inference(base_model)
    after, chat = load_for_inference(run)
    loss_before = _heldout_loss(SFTTask, cfg, run, before)
    loss_after = _heldout_loss(SFTTask, cfg, run, after)
    assert loss_after < loss_before - 0.3, (loss_before, loss_after)
    assert math.isclose(results["final"]["val_loss"], loss_after, rel_tol=1e-4)

    # Held-out prompts: the fine-tuned model ends its turn with the stop token.
    from alignment.formats import read_sft, split_holdout

    _, held = split_holdout(read_sft(str(data))[0], cfg.data.val_fraction, cfg.data.seed)
    prompts = [c.messages[:-1] for c in held[:24]]
    out = generate_texts(after, chat, prompts, GenerateOptions(sampling={"max_new_tokens": 300, "temperature": 0.8}))
    stopped = sum(o["finish_reason"] == "stop" for o in out)
    assert stopped >= len(out) // 2, [o["finish_reason"] for o in out]
    assert all(o["completion_ids"][-1] == chat.end_id for o in out if o["finish_reason"] == "stop")


def test_reward_model_learns_rule_and_exports_as_sequence_classifier(base_model, preference_file, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from alignment.job import run_align
    from training.export import export_hf
    from training.sources import load_for_inference

    run = tmp_path / "rm"
    cfg = align_config("reward", base_model, preference_file, run,
                       **{"data.val_fraction": 0.2, "epochs": 2, "train.micro_batch_size": 8})
    results = run_align("reward", cfg, standalone=True, **QUIET)
    assert results["final"]["val_accuracy"] >= 0.9, results["final"]
    assert results["examples"]["val"] >= 80

    hf = export_hf(run / sorted(p.name for p in run.glob("checkpoint_*"))[-1], tmp_path / "rm_hf")
    config = json.loads((hf / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["num_labels"] == 1
    ours, chat = load_for_inference(run)
    theirs = AutoModelForSequenceClassification.from_pretrained(hf).eval()
    texts = [[{"role": "user", "content": "Reply to: apple river"}, {"role": "assistant", "content": c}]
             for c in ("apple please river", "apple really river", "apple")]
    encoded = [chat.encode(m).ids for m in texts]
    width = max(map(len, encoded))
    ids = torch.tensor([e + [chat.pad_id] * (width - len(e)) for e in encoded])
    lengths = torch.tensor([len(e) for e in encoded])
    with torch.no_grad():
        mine = ours(ids, lengths)
        hf_scores = theirs(input_ids=ids, attention_mask=(torch.arange(width) < lengths[:, None]).long()).logits[:, 0]
    assert torch.allclose(mine, hf_scores, atol=1e-4), (mine, hf_scores)
    assert mine[0] > mine[1]  # the marker is preferred


def test_dpo_raises_heldout_margin_and_caches_reference(ray_local, base_model, preference_file, tmp_path):
    from alignment.job import run_align

    run = tmp_path / "dpo"
    cfg = align_config("dpo", base_model, preference_file, run,
                       **{"data.val_fraction": 0.2, "optim.lr": 1e-3, "train.micro_batch_size": 8, "beta": 0.5,
                          "train.log_every": 1})
    logs = []
    results = run_align("dpo", cfg, standalone=True, log=logs.append)
    first = _rows(run)[0]
    final = results["final"]
    assert final["val_accuracy"] > 0.5 and final["val_margin"] > 0.05, final
    # The policy starts as the reference, whose cached log-probs the Ray Data pass computed:
    # the first step's margin is 0 and its loss log 2.
    assert first["step"] == 1 and abs(first["margin"]) < 1e-5 and abs(first["loss"] - math.log(2)) < 1e-5, first
    assert any("reference: log-probs of" in line for line in logs)

    # A rerun finds the finished run and the cached reference; another reference is refused.
    logs = []
    again = run_align("dpo", cfg, standalone=True, log=logs.append)
    assert any("reference: reusing cached log-probs" in line for line in logs)
    assert any("examples: reusing" in line for line in logs)
    assert again["final"]["val_accuracy"] == final["val_accuracy"]  # nothing retrained, same report
    other = align_config("dpo", base_model, preference_file, run,
                         **{"data.val_fraction": 0.2, "optim.lr": 1e-3, "train.micro_batch_size": 8, "beta": 0.5,
                            "train.log_every": 1, "reference": str(run)})
    with pytest.raises(UserError, match="computed by reference [0-9a-f]{16}, this run's reference is [0-9a-f]{16}"):
        run_align("dpo", other, standalone=True, **QUIET)


def test_lora_dpo_live_reference_is_base_with_adapters_off_and_export_merges(base_model, preference_file, tmp_path):
    from alignment.job import run_align
    from training.export import export_hf, load_model_state
    from training.hf_import import load_hf_state

    run = tmp_path / "lora"
    cfg = align_config("dpo", base_model, preference_file, run,
                       **{"lora.enabled": True, "lora.r": 4, "reference_mode": "live", "train.max_steps": 6,
                          "optim.lr": 5e-3, "train.micro_batch_size": 8, "train.log_every": 1})
    run_align("dpo", cfg, standalone=True, **QUIET)
    rows = _rows(run)
    assert abs(rows[0]["loss"] - math.log(2)) < 1e-4, rows[0]  # adapters start at zero: policy == reference
    assert not (run / "reference_logps").exists()
    ckpt = run / sorted(p.name for p in run.glob("checkpoint_*"))[-1]
    meta = json.loads((ckpt / "llmforge.json").read_text())
    assert meta["lora"]["r"] == 4
    _, merged = load_model_state(ckpt)
    _, base = load_model_state(base_model)
    assert set(merged) == set(base)
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all("proj" in k for k in changed)  # only adapted projections moved
    hf = export_hf(ckpt, tmp_path / "lora_hf")
    _, _, state = load_hf_state(hf)
    assert all(torch.allclose(state[k], merged[k]) for k in merged)


def test_nonfinite_loss_stops_naming_step_and_keeps_checkpoint(ray_local, base_model, preference_file, tmp_path):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from alignment.job import run_align

    run = tmp_path / "nan"
    sets = {"train.checkpoint_every": 1, "train.micro_batch_size": 8}
    run_align("dpo", align_config("dpo", base_model, preference_file, run, **sets, **{"train.max_steps": 2}),
              standalone=True, **QUIET)
    # Corrupt the cached reference log-probs (a NaN in the data), then continue the run.
    for part in (run / "reference_logps").glob("*.parquet"):
        table = pq.read_table(part)
        nan = pc.multiply(table.column("ref_chosen"), float("nan"))
        pq.write_table(table.set_column(table.schema.get_field_index("ref_chosen"), "ref_chosen", nan), part)
    cfg = align_config("dpo", base_model, preference_file, run, **sets, **{"train.max_steps": 6})
    with pytest.raises(UserError, match=r"non-finite loss at step 3 \(worker 0, examples \['synthetic-pref-0:\d+'"):
        run_align("dpo", cfg, standalone=True, **QUIET)
    kept = sorted(int(p.name.split("_")[1]) for p in run.glob("checkpoint_*"))
    assert kept[-1] == 2  # the last good checkpoint stays; nothing was saved at the bad step
    assert "step 3" in (run / "stopped.txt").read_text()


def test_mismatched_tokenizer_is_refused_naming_both_hashes(base_model, preference_file, tmp_path):
    from alignment.job import run_align
    from dataproc.synthetic.english import generated_documents
    from dataproc.tokenization.tokenizer import TokenizerTrainOptions, train_tokenizer

    other = tmp_path / "other.json"
    train_tokenizer(generated_documents(50, 3), TokenizerTrainOptions(vocab_size=300), out_path=str(other))
    cfg = align_config("dpo", base_model, preference_file, tmp_path / "x", **{"data.tokenizer": str(other)})
    with pytest.raises(UserError, match=r"sha256 [0-9a-f]{16}\) is not the tokenizer of --model .* \(sha256 [0-9a-f]{16}\)"):
        run_align("dpo", cfg, standalone=True, **QUIET)
    assert not (tmp_path / "x").exists()  # refused before any work


@pytest.mark.parametrize("zero_stage,precision", [(0, "bf16"), (3, "fp32")])
def test_sft_from_a_hugging_face_directory_packed_on_any_zero_stage(base_model, tmp_path, zero_stage, precision):
    """An HF LlamaForCausalLM directory as --model, packed SFT examples, ZeRO 0 (bf16) and 3."""
    from alignment.job import run_align
    from alignment.synthetic import sft_task, write_jsonl
    from training.export import export_hf
    from training.sources import resolve_model

    hf = export_hf(base_model, tmp_path / "hf")
    assert resolve_model(hf).format == "hf"
    data = write_jsonl(sft_task(64, seed=2), tmp_path / "sft.jsonl")
    run = tmp_path / "sft"
    cfg = align_config("sft", hf, data, run, **{"packing": True, "data.max_len": 128, "train.max_steps": 3,
                                                "train.zero_stage": zero_stage, "train.precision": precision,
                                                "train.log_every": 1})
    results = run_align("sft", cfg, standalone=True, **QUIET)
    assert results["examples"]["train"] < 64  # packed: several conversations per sequence
    assert math.isfinite(results["final"]["val_loss"])
    # The run directory is what `train export` / `generate` take; the export loads in HF.
    from transformers import AutoModelForCausalLM

    ckpt = run / sorted(p.name for p in run.glob("checkpoint_*"))[-1]
    out = export_hf(ckpt, tmp_path / "sft_hf")
    ids = torch.tensor([[0, 5, 17, 300, 42, 7]])
    with torch.no_grad():
        ours = resolve_model(run).build()(ids)
        theirs = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4)
