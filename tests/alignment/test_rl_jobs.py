"""GRPO and PPO on real Ray actor groups (local Ray, 2 CPUs): learning, faults, bad input.

The arithmetic warm start is the tiny pretrained base fine-tuned (align sft, standalone) on sums
a + b with a, b in 0..19 answered "#### N"; it answers about two thirds greedily but a third
when sampling at temperature 1. GRPO's job is to sharpen that.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.alignment.conftest import align_config

pytestmark = pytest.mark.ray
QUIET = {"log": lambda *a, **k: None}


def _write(rows, path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def arithmetic(base_model, tmp_path_factory):
    """(SFT warm-start run dir, 32 training prompts)."""
    from alignment.job import run_align
    from alignment.synthetic import arithmetic_sft, arithmetic_task, write_jsonl

    d = tmp_path_factory.mktemp("arith")
    sft_data = write_jsonl(arithmetic_sft(arithmetic_task(2000, seed=1, low=0, high=19)), d / "sft.jsonl")
    run = d / "sft"
    cfg = align_config("sft", base_model, sft_data, run, **{
        "train.max_steps": 400, "train.micro_batch_size": 32, "optim.lr": 3e-3, "optim.warmup_steps": 10,
        "data.val_fraction": 0.0, "train.checkpoint_every": 0, "train.log_every": 100})
    run_align("sft", cfg, standalone=True, **QUIET)
    prompts = _write(arithmetic_task(32, seed=5, low=0, high=19), d / "prompts.jsonl")
    return run, prompts


def rl_config(algorithm: str, model: Path, data: Path, out: Path, **sets):
    from alignment.rl_driver import config_class
    from llmforge.common.config import load_config

    overrides = {"model": str(model), "data.path": str(data), "run.storage_path": str(out.parent),
                 "run.name": out.name, "rollout.max_new_tokens": 8, "train.checkpoint_every": 0, **sets}
    return load_config(config_class(algorithm), None, overrides)


def test_grpo_raises_exact_match_on_arithmetic_from_sft(ray_local, arithmetic, tmp_path):
    from alignment.rl_driver import run_rl

    sft, prompts = arithmetic
    cfg = rl_config("grpo", sft, prompts, tmp_path / "grpo", **{
        "reward.function": "math", "train.max_steps": 30, "train.prompts_per_step": 32, "group_size": 8,
        "train.micro_batch_size": 64, "optim.lr": 2e-4, "data.eval_path": str(prompts), "data.eval_samples": 8,
        "train.checkpoint_every": 15})
    results = run_rl("grpo", cfg, **QUIET)
    before, after = results["initial_eval"], results["final_eval"]
    # 32 prompts x 8 draws with the same seeds before and after: a paired comparison of what GRPO
    # optimises, the sampled answers (measured: 0.39 -> 0.50 and 0.40 -> 0.50 with the real-text
    # base on two hosts, 0.48 -> 0.57 with the generated-text base of a checkout without
    # ../shared/data). Greedy answers on 32 prompts move by a few prompts either way with the
    # host's float rounding (0.66 -> 0.72 on one host, 0.75 -> 0.69 on another, same code and
    # pins; 0.81 -> 0.94 generated-text): they must not lose more than 3 of the 32.
    assert after["eval_sampled_exact_match"] >= before["eval_sampled_exact_match"] + 0.06, (before, after)
    assert after["eval_exact_match"] >= before["eval_exact_match"] - 3 / 32, (before, after)
    rows = [json.loads(x) for x in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward_mean" in r]
    assert [r["step"] for r in steps] == list(range(1, 31)) and steps[-1]["policy_version"] == 30
    for key in ("time_generation", "time_scoring", "time_training", "time_sync", "tokens_per_s", "entropy",
                "clip_fraction", "response_length", "reward_std"):
        assert all(key in r for r in steps), key
    assert results["counters"]["constant_groups"] > 0  # groups with one reward are counted and left out
    assert sum(r["sequences_trained"] for r in steps) == 30 * 32 * 8 - 8 * results["counters"]["constant_groups"]
    assert (tmp_path / "grpo" / "rl.png").stat().st_size > 10_000
    # the policy is a run directory every other verb takes
    from training.sources import resolve_model

    assert resolve_model(tmp_path / "grpo").path.name == "checkpoint_00000030"


def _kill(plan: list[tuple[str, str, int]], fired: list):
    """A hook that SIGKILLs the first actor of `group` at `when` of step `at_step` (0-based), once
    for each (group, when, at_step) of `plan`."""
    import ray

    def hook(event, step, run):
        for group, when, at_step in plan:
            if event == when and step == at_step and (group, at_step) not in fired:
                actor = run.groups.rollout[0] if group == "rollout" else run.groups.trainers[group][0]
                os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)
                fired.append((group, at_step))
    return hook


@pytest.fixture(scope="module")
def uninterrupted(ray_local, arithmetic, tmp_path_factory):
    from alignment.rl_driver import run_rl

    sft, prompts = arithmetic
    out = tmp_path_factory.mktemp("rl_ref") / "grpo"
    results = run_rl("grpo", _fault_config(sft, prompts, out), **QUIET)
    return results, _step_rows(out)


def _fault_config(sft, prompts, out, **sets):
    # Constant groups are kept (advantage 0) so that every step updates whatever the warm start
    # answers: the steps' losses are then there to compare.
    return rl_config("grpo", sft, prompts, out, **{
        "reward.function": "math", "train.max_steps": 4, "train.prompts_per_step": 4, "group_size": 4,
        "train.micro_batch_size": 8, "optim.lr": 5e-4, "train.checkpoint_every": 2, "data.eval_samples": 0,
        "filter_constant_groups": False, **sets})


def _step_rows(out: Path) -> dict[int, dict]:
    from training.trainer import read_metrics

    return {r["step"]: r for r in read_metrics(out / "metrics.jsonl") if "reward_mean" in r}


SAME = ("reward_mean", "reward_std", "loss", "entropy", "response_length", "sequences_trained")


@pytest.mark.parametrize("plan,placement", [
    ([("rollout", "before_generate", 2), ("policy", "before_update", 3)], "spread"),
    ([("policy", "before_generate", 2)], "hybrid"),
], ids=["rollout-then-policy-spread", "policy-hybrid"])
def test_killed_actor_is_replaced_and_the_run_continues_exactly(uninterrupted, arithmetic, tmp_path, plan, placement):
    """A killed rollout actor: replaced, given the current weights, its batch redone. A killed
    trainer: the group restarts from checkpoint 2, the rollout actors get checkpoint 2's weights
    (they held version 3's), steps 3 and 4 are redone. Every step's numbers equal the
    uninterrupted (colocated, rollout actor) run's: with every group on bundles of its own (the
    rollout actor killed at step 3, then the trainer as it is about to update step 4), and with
    the trainer generating (hybrid) — it is killed as it is about to generate step 3."""
    from alignment.rl_driver import run_rl

    sft, prompts = arithmetic
    fired: list = []
    cfg = _fault_config(sft, prompts, tmp_path / "grpo", **{"placement.colocate": placement != "spread",
                                                            "placement.hybrid": placement == "hybrid",
                                                            "placement.actor_cpus": 0.5})
    results = run_rl("grpo", cfg, hooks=[_kill(plan, fired)], **QUIET)
    assert fired == [(group, at_step) for group, _, at_step in plan]
    for group, counter in (("rollout", "rollout_restarts"), ("policy", "trainer_restarts")):
        assert results["counters"][counter] == sum(g == group for g, _, _ in plan), counter
    reference, rows = uninterrupted[1], _step_rows(tmp_path / "grpo")
    assert sorted(rows) == [1, 2, 3, 4]
    for step in rows:
        for key in SAME:
            assert rows[step][key] == pytest.approx(reference[step][key], rel=1e-5, abs=1e-7), (step, key)
    assert rows[4]["policy_version"] == 4
    if placement == "hybrid":  # no rollout actor, no weight transfer
        assert all(rows[step]["time_sync"] < 0.05 for step in rows)


def test_rerun_resumes_from_the_last_checkpoint(uninterrupted, arithmetic, tmp_path):
    """Stopped after step 2 (max_steps 2), then the same run with max_steps 4: steps 3 and 4 equal
    the uninterrupted run's (prompt stream position and sampling seeds restored)."""
    from alignment.rl_driver import run_rl

    sft, prompts = arithmetic
    out = tmp_path / "grpo"
    cfg = _fault_config(sft, prompts, out)
    run_rl("grpo", cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 2})}), **QUIET)
    assert (out / "checkpoint_00000002" / "rl_state.json").exists()
    logs: list[str] = []
    run_rl("grpo", cfg, log=logs.append)
    assert any("resumed from step 2" in line for line in logs)
    rows, reference = _step_rows(out), uninterrupted[1]
    for step in (3, 4):
        for key in SAME:
            assert rows[step][key] == pytest.approx(reference[step][key], rel=1e-5, abs=1e-7), (step, key)


@pytest.mark.parametrize("hybrid", [False, True])
def test_zero3_two_workers_sync_the_gathered_weights(ray_local, arithmetic, tmp_path, hybrid):
    """2 trainer ranks at ZeRO-3: after update 1 the rollout actor (hybrid: each rank's
    generation copy) holds the full gathered weights, equal to what DeepSpeed's checkpoint of
    step 1 reconstructs (and not the start)."""
    import ray

    from alignment.rl_driver import run_rl
    from alignment.rl_workers import state_digest
    from training.sources import resolve_model

    sft, prompts = arithmetic
    out = tmp_path / "z3"
    seen = {}

    def hook(event, step, run):
        if event == "before_generate" and step == 1:
            generators = run.groups.trainers["policy"] if hybrid else run.groups.rollout
            seen["digests"] = ray.get([g.weights_digest.remote() for g in generators])
            seen["version"] = run.version

    cfg = rl_config("grpo", sft, prompts, out, **{
        "reward.function": "math", "scaling.num_workers": 2, "train.zero_stage": 3, "train.max_steps": 2,
        "group_size": 4, "train.prompts_per_step": 4, "train.micro_batch_size": 4, "optim.lr": 1e-3,
        "data.eval_samples": 0, "train.checkpoint_every": 1, "run.num_to_keep": None, "placement.hybrid": hybrid})
    results = run_rl("grpo", cfg, hooks=[hook], **QUIET)
    assert results["steps"] == 2 and seen["version"] == 1
    assert len(seen["digests"]) == (2 if hybrid else 1)
    saved = state_digest(resolve_model(out / "checkpoint_00000001").state_dict())
    assert set(seen["digests"]) == {saved}
    assert saved != state_digest(resolve_model(sft).state_dict())


def test_ppo_raises_reward_model_score_with_bounded_kl(ray_local, base_model, preference_file, tmp_path):
    """A reward model that detects the marker word 'please'; a policy fine-tuned on replies that
    say it half the time. PPO makes it say it more: the reward model's mean score rises."""
    from alignment.job import run_align
    from alignment.rl_driver import run_rl
    from alignment.synthetic import preference_task, write_jsonl
    from alignment.formats import Conversation

    rm = tmp_path / "rm"
    run_align("reward", align_config("reward", base_model, preference_file, rm, **{
        "data.val_fraction": 0.0, "train.micro_batch_size": 16, "train.max_steps": 80}), standalone=True, **QUIET)
    pairs = preference_task(600, seed=3)
    mixed = [Conversation(p.id, [*p.prompt, {"role": "assistant", "content": p.chosen if i % 2 else p.rejected}])
             for i, p in enumerate(pairs)]
    sft = tmp_path / "sft"
    run_align("sft", align_config("sft", base_model, write_jsonl(mixed, tmp_path / "mixed.jsonl"), sft, **{
        "train.max_steps": 150, "train.micro_batch_size": 32, "optim.lr": 3e-3, "data.val_fraction": 0.0}),
        standalone=True, **QUIET)
    prompts = _write([{"id": p.id, "prompt": p.prompt[0]["content"]} for p in preference_task(64, seed=9)],
                     tmp_path / "prompts.jsonl")
    cfg = rl_config("ppo", sft, prompts, tmp_path / "ppo", **{
        "reward.model": str(rm), "train.max_steps": 16, "train.prompts_per_step": 32, "train.micro_batch_size": 32,
        "rollout.max_new_tokens": 12, "optim.lr": 3e-4, "kl_coef": 0.05})
    results = run_rl("ppo", cfg, **QUIET)
    rows = list(_step_rows(tmp_path / "ppo").values())
    first, last = rows[:4], rows[-4:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    # measured (means of the first and last four steps): -0.25 -> 1.26 with the real-text base,
    # -0.12 -> 0.18 with the generated-text base of a checkout without ../shared/data; KL <= 4.1
    assert mean(last, "reward_mean") > mean(first, "reward_mean") + 0.2, [r["reward_mean"] for r in rows]
    assert all(abs(r["kl"]) < 8.0 for r in rows), [r["kl"] for r in rows]  # nats per sequence, kl_coef 0.05
    for key in ("value_loss", "value_mean", "non_score_reward", "clip_fraction"):
        assert all(key in r for r in rows), key
    assert (tmp_path / "ppo" / "checkpoint_00000016" / "critic" / "llmforge.json").exists()
    assert results["counters"]["trainer_restarts"] == 0


# ------------------------------------------------------------------------------ bad input


def test_bad_inputs_are_refused_before_any_actor_starts(arithmetic, base_model, tmp_path):
    from alignment.rl_driver import RLRun
    from llmforge.common.errors import UserError
    from tests.support.tiny_checkpoint import tiny_checkpoint

    sft, prompts = arithmetic
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="holds no prompts"):
        RLRun("grpo", rl_config("grpo", sft, empty, tmp_path / "o", **{"reward.function": "math"}))
    long = _write([{"prompt": "word " * 600, "answer": 1}], tmp_path / "long.jsonl")
    with pytest.raises(UserError, match="all 1 prompts are longer than max_seq_len"):
        RLRun("grpo", rl_config("grpo", sft, long, tmp_path / "o", **{"reward.function": "math"}))
    mixed = _write([{"prompt": "word " * 600, "answer": 1}, {"prompt": "What is 1 + 1?", "answer": 2}],
                   tmp_path / "mixed.jsonl")
    run = RLRun("grpo", rl_config("grpo", sft, mixed, tmp_path / "o", **{"reward.function": "math"}))
    assert run.prompt_counts["prompt_too_long"] == 1 and len(run.train_prompts) == 1
    other, _, _ = tiny_checkpoint(tmp_path / "other_rm", seed=1)  # its own tokenizer
    meta = json.loads((other / "llmforge.json").read_text())
    (other / "llmforge.json").write_text(json.dumps({**meta, "model_kind": "reward"}))
    with pytest.raises(Exception, match="tokenizer sha256"):
        RLRun("ppo", rl_config("ppo", sft, prompts, tmp_path / "o", **{"reward.model": str(other)}))
    with pytest.raises(Exception, match="exactly one of reward.function"):
        rl_config("grpo", sft, prompts, tmp_path / "o")


def test_actor_groups_larger_than_the_embedded_ray_stop_before_any_actor_starts(ray_local, arithmetic, tmp_path):
    # A placement group that one machine cannot hold would wait 300 s before failing.
    from alignment.rl_driver import ActorGroups
    from llmforge.common.errors import UserError

    sft, prompts = arithmetic
    cfg = rl_config("grpo", sft, prompts, tmp_path / "big", **{"reward.function": "math", "scaling.num_workers": 3})
    groups_before = len(ray_local.util.placement_group_table())
    with pytest.raises(UserError, match=r"need \d+ CPU \(has 2\).*scaling.num_workers.*rollout.actors"):
        ActorGroups("grpo", cfg, tmp_path / "big")
    assert len(ray_local.util.placement_group_table()) == groups_before  # none was created


def failing_reward(completion: str, row: dict) -> float:
    raise ValueError(f"cannot parse {completion[:5]!r}")


def sometimes_nan(completion: str, row: dict) -> float:
    return float("nan") if row["id"].endswith(":3") else 1.0 * ("#" in completion)


def test_reward_function_errors_are_counted_then_stop_the_run_naming_it(ray_local, arithmetic, tmp_path):
    from alignment.rl_driver import run_rl
    from llmforge.common.errors import UserError

    sft, prompts = arithmetic
    base = {"train.max_steps": 2, "train.prompts_per_step": 8, "group_size": 4, "data.eval_samples": 0}
    # prompt 3 of 32 always NaN: 1 in 8 prompts of a step < 20% allowed -> counted, dropped, run goes on
    from llmforge.cli import main

    out = tmp_path / "nan"
    assert main(["align", "grpo", "--model", str(sft), "--data", str(prompts), "--output", str(out), "--reward",
                 "tests.alignment.test_rl_jobs:sometimes_nan", "--set", "reward.max_error_rate=0.2",
                 "--set", "rollout.max_new_tokens=8", *(x for k, v in base.items() for x in ("--set", f"{k}={v}"))]) == 0
    ok = json.loads((out / "results.json").read_text())
    assert ok["steps"] == 2
    assert ok["counters"]["reward_errors"] == 4 * sum(
        1 for s in range(2) for p in _stream_ids(sft, prompts, tmp_path, s) if p.endswith(":3"))
    with pytest.raises(UserError, match=r"reward function tests.alignment.test_rl_jobs:failing_reward: 32 of 32 "
                                        r"samples could not be scored .* first error: ValueError: cannot parse"):
        run_rl("grpo", rl_config("grpo", sft, prompts, tmp_path / "bad", **{
            **base, "reward.function": "tests.alignment.test_rl_jobs:failing_reward"}), **QUIET)


def _stream_ids(sft, prompts, tmp_path, step):
    from alignment.rl_driver import RLRun

    run = RLRun("grpo", rl_config("grpo", sft, prompts, tmp_path / "ids", **{
        "reward.function": "math", "train.prompts_per_step": 8, "group_size": 4}))
    return [p.id for p in run.stream.take(step)]
