"""Scaling laws and data ablations: the fit recovers a known law, the compute-optimal formula
and isoFLOP minima agree with brute force, and tiny real sweeps / ablations run through Ray."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from llmforge.cli import main
from llmforge.common.config import validate_config
from training.scaling.law import (BESIROGLU_2024, HOFFMANN_2022, ScalingLaw, _objective, fit_law, isoflop_minima,
                                  isoflop_minimum)

LAW_PARAMS = ("E", "A", "B", "alpha", "beta")


def _draw(law: ScalingLaw, sigma: float, seed: int = 0):
    """Points of `law` on an 8 x 8 grid of N (1e6..1e10) and D (1e8..1e12), with multiplicative
    log-normal noise of `sigma`."""
    rng = np.random.default_rng(seed)
    n, d = (x.ravel() for x in np.meshgrid(np.logspace(6, 10, 8), np.logspace(8, 12, 8)))
    return n, d, law.loss(n, d) * np.exp(rng.normal(0.0, sigma, n.shape))


def test_fit_recovers_the_besiroglu_law_within_5_percent():
    n, d, loss = _draw(BESIROGLU_2024, sigma=1e-3)
    fit = fit_law(n, d, loss)
    errors = {k: getattr(fit.law, k) / getattr(BESIROGLU_2024, k) - 1 for k in LAW_PARAMS}
    print("recovered", fit.law.to_dict(), "relative errors", {k: f"{v:+.2%}" for k, v in errors.items()})
    assert all(abs(e) < 0.05 for e in errors.values()), errors
    assert fit.n_points == 64 and fit.to_dict()["rms_log_residual"] < 2e-3
    # The allocation the recovered law gives is the true one, within a few percent.
    for c in (1e21, 1e24):
        (n_fit, d_fit), (n_true, d_true) = fit.law.compute_optimal(c), BESIROGLU_2024.compute_optimal(c)
        assert n_fit == pytest.approx(n_true, rel=0.1) and d_fit == pytest.approx(d_true, rel=0.1)


def test_exact_points_are_fitted_exactly_from_a_small_grid():
    n, d, loss = _draw(HOFFMANN_2022, sigma=0.0)
    grid = {"a": (0.0, 5.0), "b": (0.0, 5.0), "e": (0.0, 0.5), "alpha": (0.5,), "beta": (0.5,)}
    fit = fit_law(n, d, loss, grid=grid, starts=None)
    assert fit.n_inits == 8 and fit.objective < 1e-12
    for k in LAW_PARAMS:
        assert getattr(fit.law, k) == pytest.approx(getattr(HOFFMANN_2022, k), rel=1e-3), k


def test_objective_gradient_matches_finite_differences():
    n, d, loss = _draw(BESIROGLU_2024, sigma=0.01, seed=3)
    args = (np.log(n), np.log(d), np.log(loss), 1e-3)
    theta = np.array([6.0, 7.5, 0.5, 0.3, 0.4])
    _, grad = _objective(theta, *args)
    for i in range(5):
        step = np.zeros(5)
        step[i] = 1e-6
        numeric = (_objective(theta + step, *args)[0] - _objective(theta - step, *args)[0]) / 2e-6
        assert grad[i] == pytest.approx(numeric, rel=1e-4, abs=1e-9), i


@pytest.mark.parametrize("law", [BESIROGLU_2024, HOFFMANN_2022, ScalingLaw(E=2.0, A=50.0, B=900.0, alpha=0.5, beta=0.25)])
@pytest.mark.parametrize("flops", [1e18, 5.76e23, 1e26])
def test_compute_optimal_allocation_matches_brute_force(law, flops):
    from scipy.optimize import minimize_scalar

    n_opt, d_opt = law.compute_optimal(flops)
    assert 6 * n_opt * d_opt == pytest.approx(flops, rel=1e-12)
    # brute force: L along C = 6ND on a fine grid of log N, then refined
    log_n = np.linspace(np.log(1e3), np.log(flops / 6 / 1e3), 200_001)
    losses = law.loss(np.exp(log_n), flops / 6 / np.exp(log_n))
    guess = log_n[np.argmin(losses)]
    refined = minimize_scalar(lambda x: float(law.loss(np.exp(x), flops / 6 / np.exp(x))),
                              bracket=(guess - 0.01, guess, guess + 0.01), tol=1e-12).x
    assert n_opt == pytest.approx(math.exp(guess), rel=2e-3)
    assert n_opt == pytest.approx(math.exp(refined), rel=1e-5)
    assert law.loss(n_opt, d_opt) <= losses.min() + 1e-12


def test_isoflop_parabola_minima():
    # An exact parabola in log N: its vertex.
    n = np.geomspace(1e6, 1e9, 7)
    loss = 0.08 * (np.log(n) - np.log(3e7)) ** 2 + 2.5
    m = isoflop_minimum(1e20, n, loss)
    assert m.n_opt == pytest.approx(3e7, rel=1e-9) and m.loss_opt == pytest.approx(2.5) and m.inside
    # Upside down: no minimum, said so.
    assert isoflop_minimum(1e20, n, -loss).n_opt is None
    with pytest.raises(ValueError, match="a parabola needs 3"):
        isoflop_minimum(1e20, n[:2], loss[:2])
    # Runs drawn from the law at each budget, sizes spread around the optimum: the parabolas'
    # vertices land near the law's N_opt(C), and the budgets with < 3 sizes are left out.
    flops, sizes, losses = [], [], []
    for c in (1e19, 1e20, 1e21):
        n_true, _ = BESIROGLU_2024.compute_optimal(c)
        for s in np.geomspace(n_true / 8, n_true * 8, 9):
            flops.append(c)
            sizes.append(s)
            losses.append(float(BESIROGLU_2024.loss(s, c / (6 * s))))
    flops += [1e22, 1e22]
    sizes += [1e9, 2e9]
    losses += [2.0, 2.1]
    minima = isoflop_minima(flops, sizes, losses)
    assert [m.flops for m in minima] == [1e19, 1e20, 1e21]
    for m in minima:
        assert m.inside and m.n_opt == pytest.approx(float(BESIROGLU_2024.compute_optimal(m.flops)[0]), rel=0.15)


def test_byte_lengths_of_tokens_add_up_to_the_text(text_shards):
    from tokenizers import Tokenizer

    from training.scaling.runner import evaluated_windows, token_byte_lengths

    shards, _ = text_shards
    lengths = token_byte_lengths(str(shards / "tokenizer.json"))
    tokenizer = Tokenizer.from_file(str(shards / "tokenizer.json"))
    text = "Thou art more lovely — and more temperate: 1,234 résumés!\n\n naïve"
    ids = tokenizer.encode(text).ids
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    # <|endoftext|> (the document boundary, id 0) is no text: no bytes, as in decoded text
    assert lengths[0] == 0 and tokenizer.decode([0, *ids]) == text
    # the loop's validation sample: eval_batches x micro x workers windows, wrapping around
    assert evaluated_windows(5, 2, 4).tolist() == [0, 1, 2, 3, 4, 0, 1, 2]


# ---- configs: checked before anything runs --------------------------------------------------

BASE = {"model": {"max_seq_len": 64}, "data": {"seq_len": 64, "val_fraction": 0.02},
        "optim": {"lr": 1e-2}, "train": {"micro_batch_size": 8, "eval_batches": 4, "log_every": 100, "zero_stage": 0}}
MODELS = {"d16": {"dim": 16, "n_layers": 1, "n_heads": 2}, "d32": {"dim": 32, "n_layers": 2, "n_heads": 2},
          "d48": {"dim": 48, "n_layers": 2, "n_heads": 4}, "d64": {"dim": 64, "n_layers": 4, "n_heads": 4}}


def test_sweep_expands_grids_isoflop_groups_and_points(text_shards, tmp_path):
    from training.scaling.config import SweepConfig, sweep_runs

    shards, _ = text_shards
    cfg = validate_config(SweepConfig, {"shards": str(shards), "output": str(tmp_path), "models": MODELS,
                                        "tokens": [20480], "flops": [4e9], "points": [{"model": "d64", "tokens": 30720}],
                                        "seeds": [0, 1], "base": BASE, "min_steps": 10})
    specs, skipped = sweep_runs(cfg)
    per_step = 8 * 64
    assert all(s.tokens == s.steps * per_step for s in specs)
    grid = [s for s in specs if s.group_flops is None and s.tokens == 20480]
    assert sorted((s.model, s.seed) for s in grid) == sorted((m, seed) for m in MODELS for seed in (0, 1))
    group = [s for s in specs if s.group_flops == 4e9]
    # d64 (N = 267k) at 4e9 FLOPs is 2,498 tokens = 5 steps: skipped, with the reason
    assert sorted({s.model for s in group}) == ["d16", "d32", "d48"] and len(group) == 6
    assert len(skipped) == 2 and all("d64" in why and "min_steps 10" in why for why in skipped)
    for s in group:
        assert s.tokens == pytest.approx(4e9 / (6 * s.params), abs=per_step / 2)
        assert s.config.train.max_steps == s.steps == s.config.train.eval_every
        assert s.config.optim.warmup_steps == round(0.1 * s.steps)
        assert s.config.model.vocab_size == 1024 and s.config.data.tokenizer  # from the shards
    assert [s.tokens for s in specs if s.model == "d64" and s.tokens == 30720 and s.seed == 0]
    assert len({s.name for s in specs}) == len(specs)
    # Same config, same names (the resume key); another lr, other runs.
    assert [s.name for s in sweep_runs(cfg)[0]] == [s.name for s in specs]
    other = cfg.model_copy(update={"base": cfg.base.model_copy(update={"optim": cfg.base.optim.model_copy(update={"lr": 2e-2})})})
    assert not {s.name for s in sweep_runs(other)[0]} & {s.name for s in specs}


@pytest.mark.parametrize("override, message", [
    ("points=[{model: nope, tokens: 1000}]", "model 'nope' is not one of models"),
    ("base.optim.lr=-1", "base.optim.lr"),
    ("base.data.val_fraction=0", "val_fraction must be > 0"),
    ("flops=[1e3]", "no run left to do"),
    ("models.d16.n_heads=3", "dim 16 is not divisible by n_heads 3"),
])
def test_bad_sweep_configs_stop_before_any_run(text_shards, tmp_path, capsys, override, message):
    shards, _ = text_shards
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(json.dumps({"models": MODELS, "base": BASE, "flops": [4e9]}))
    assert main(["train", "sweep", "--shards", str(shards), "--output", str(tmp_path / "out"), "--config", str(cfg),
                 "--set", override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_ablation_stops_before_any_run(text_shards, tmp_path, capsys):
    shards, _ = text_shards
    assert main(["train", "ablate", "--shards", str(shards), "--output", str(tmp_path / "out")]) == 2
    assert "List should have at least 2 items" in capsys.readouterr().err
    assert main(["train", "ablate", "--shards", str(shards), str(tmp_path / "nope"), "--output",
                 str(tmp_path / "out")]) == 2
    assert "nope: no such directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---- tiny real runs through Ray ----------------------------------------------------------------

@pytest.mark.ray
def test_tiny_sweep_fit_and_held_out_prediction(ray_local, text_shards, tmp_path, capsys):
    """Three small models at two isoFLOP budgets, and a larger model at more tokens held out:
    the fit's prediction for it is reported with its error (tiny runs: no accuracy claimed)."""
    from training.scaling.config import SweepConfig
    from training.scaling.sweep import run_sweep

    shards, _ = text_shards
    cfg = validate_config(SweepConfig, {
        "shards": str(shards), "output": str(tmp_path / "sweep"), "models": MODELS, "base": BASE,
        "flops": [3e9, 6e9], "points": [{"model": "d64", "tokens": 20480}], "min_steps": 9})
    lines: list[str] = []
    result = run_sweep(cfg, log=lines.append)
    rows = result["runs"]
    assert not result["failed"] and len(rows) == 7 and len(result["skipped"]) == 2  # d64 at both budgets
    for r in rows:
        assert r["status"] == "done" and 4.0 < r["val_loss"] < 7.0, r
        assert r["flops"] == 6 * r["params"] * r["tokens"] and r["n"] == r["params"]
        assert 1.0 < r["val_bytes_per_token"] < 8.0
        metrics = [json.loads(x) for x in Path(r["run_dir"], "metrics.jsonl").read_text().splitlines()]
        assert metrics[-1]["step"] == r["steps"] and metrics[-1]["val_loss"] == r["val_loss"]
        assert all(0 < m["grad_norm"] < 100 for m in metrics), metrics  # ZeRO-0: the loop's own norm
    by = {(r["model"], r["group_flops"]): r for r in rows}
    assert by[("d16", 6e9)]["val_loss"] < by[("d16", 3e9)]["val_loss"]  # twice the tokens: lower loss
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "sweep" / "runs.parquet").to_pylist()
    assert [r["name"] for r in table] == [r["name"] for r in rows]
    # Rerun: every run is finished, nothing trains again.
    sizes = {r["name"]: Path(r["run_dir"], "metrics.jsonl").stat().st_size for r in rows}
    lines.clear()
    again = run_sweep(cfg, log=lines.append)
    assert "sweep: 7 runs, 7 finished before, 0 to train" in lines
    assert [r["val_loss"] for r in again["runs"]] == [r["val_loss"] for r in rows]
    assert sizes == {r["name"]: Path(r["run_dir"], "metrics.jsonl").stat().st_size for r in rows}

    capsys.readouterr()
    assert main(["scaling", "fit", "--runs", str(tmp_path / "sweep"), "--output", str(tmp_path / "fit"),
                 "--holdout", "d64", "--budget", "1e11"]) == 0
    printed = capsys.readouterr().out
    fit = json.loads((tmp_path / "fit" / "results.json").read_text())
    (held,) = fit["holdout"]
    print(printed)  # the report: law, isoFLOP minima, the held-out run's predicted vs observed loss
    assert held["model"] == "d64" and math.isfinite(held["predicted"]) and math.isfinite(held["relative_error"])
    assert f"held out {held['name']}" in printed and "budget C = 1e+11 FLOPs: N_opt" in printed
    assert fit["fit"]["n_points"] == 6 and all(math.isfinite(v) for v in fit["law"].values())
    assert sorted(m["flops"] for m in fit["isoflop"]) == [3e9, 6e9] and all(m["points"] == 3 for m in fit["isoflop"])
    assert fit["budget"]["n_opt"] * fit["budget"]["d_opt"] * 6 == pytest.approx(1e11)
    assert (tmp_path / "fit" / "fit.png").stat().st_size > 20_000


@pytest.fixture(scope="module")
def shuffled_shards(text_shards, tmp_path_factory):
    """The same words in random order, tokenized with a tokenizer of their own."""
    from dataproc.tokenization.text_files import shards_from_text_files
    from tests.support.text_shards import text_paths

    root = tmp_path_factory.mktemp("shuffled")
    paths, _ = text_paths(root)
    words = " ".join(Path(p).read_text() for p in paths).split()
    random.Random(0).shuffle(words)
    docs = ["\n".join(" ".join(words[j:j + 12]) for j in range(i, min(i + 120, len(words)), 12))
            for i in range(0, len(words), 120)]
    (root / "shuffled.txt").write_text("\n\n".join(docs))
    shards_from_text_files([str(root / "shuffled.txt")], str(root / "shards"), vocab_size=1024, shard_tokens=200_000)
    return root / "shards"


@pytest.mark.ray
def test_ablation_real_text_beats_shuffled_words_in_bits_per_byte(ray_local, text_shards, shuffled_shards, tmp_path):
    from training.scaling.ablate import run_ablate
    from training.scaling.config import AblateConfig

    shards, real = text_shards
    cfg = validate_config(AblateConfig, {
        "shards": [str(shards), str(shuffled_shards)], "labels": ["text", "shuffled"], "output": str(tmp_path),
        "model": MODELS["d32"], "tokens": 20480, "seeds": 3, "base": BASE})
    lines: list[str] = []
    result = run_ablate(cfg, log=lines.append)
    print("\n".join(lines[-5:]))
    table = {t["label"]: t for t in result["table"]}
    assert not result["failed"] and all(t["seeds"] == 3 for t in table.values())
    for r in result["runs"]:  # bits/byte = nats/token / ln 2 / (bytes/token) of the scored targets
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2) / r["val_bytes_per_token"])
        assert r["tokens"] == 20480
    # Same model shape and tokens; the tokenizers differ, so bytes per token differ too.
    assert table["text"]["bytes_per_token"] != table["shuffled"]["bytes_per_token"]
    assert table["text"]["params"] == table["shuffled"]["params"]  # both vocabularies are 1024
    for t in table.values():
        assert t["bpb_std"] > 0 and t["bpb_stderr"] == pytest.approx(t["bpb_std"] / math.sqrt(3))
    gap = table["shuffled"]["bpb_mean"] - table["text"]["bpb_mean"]
    assert gap > 3 * max(table["text"]["bpb_std"], table["shuffled"]["bpb_std"]), table
    import pyarrow.parquet as pq

    assert [r["label"] for r in pq.read_table(tmp_path / "ablation.parquet").to_pylist()] == ["text", "shuffled"]
    assert json.loads((tmp_path / "results.json").read_text())["table"][0]["label"] == "text"
    assert (tmp_path / "bpb.png").stat().st_size > 10_000
