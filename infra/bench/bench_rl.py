"""Benchmark: online RL on CPU, two comparisons on the same tiny model, same threads, fp32.

Setup (not timed; kept in --work and reused by a later run with the same --work): the pretrained
tiny base (`tests.support.tiny_checkpoint.base_checkpoint`: the tiny preset, dim 64 x 2 layers,
BPE 1024) warm-started by `run_align("sft")` on `alignment.synthetic.arithmetic_sft` rows (so
the `math` reward is not all zeros and GRPO's groups carry a signal). That SFT run is the policy
both sides start from: llmforge reads its run directory, TRL its Hugging Face export
(`training.export.export_hf`: safetensors, tokenizer.json and tokenizer_config.json with the
chat template, so `apply_chat_template` gives llmforge's prompt ids; the setup checks that).

1. Rollout tokens/s, KV cache vs recomputing the prefix (one process, --rollout-batch prompts
   per batch, greedy, no stop token so every row makes exactly N new tokens, N in
   --rollout-lengths): `training.generate.generate` (left-padded batch, KV cache: a prefill,
   then one token per row per forward) vs a loop in this file that runs the full `model(ids)`
   over every row's whole prefix at every step (right-padded, no cache; the logits at each
   row's last token). Both must choose the same tokens. Prompts: the arithmetic prompts
   (`arithmetic_task`, ~15 tokens) and long chat prompts (a system turn and earlier turns before
   the question, ~230 tokens) so the prefix matters. Best of --rollout-repeats.

2. GRPO steps/s vs TRL's GRPOTrainer (--steps RL steps of --prompts prompts x --group samples,
   --max-new tokens, lr --lr constant, AdamW 0.9/0.95, clip 1.0, beta/kl 0, eps 0.2, std-scaled
   group advantages, token-mean (TRL "dapo") loss, temperature 1, one optimizer step per
   rollout batch, i.e. TRL per_device_train_batch_size = prompts x group,
   gradient_accumulation_steps 1, steps_per_generation 1, num_iterations 1):
     llmforge  `alignment.rl_driver.run_rl("grpo")` on a local Ray (num_cpus = --threads):
               PolicyTrainer (DeepSpeed ZeRO-0) generating with KV-cache sampling itself
               (placement.hybrid; --hybrid 0: a Rollout actor colocated with it, sent the
               weights after every update), the reward in the driver, --threads torch threads;
               filter_constant_groups off so both sides train on every sequence
               (--filter-constant-groups: llmforge's default).
     TRL       GRPOTrainer (transformers `generate`, sampling) with the `math` reward wrapped as a
               TRL reward function; a sampler replays llmforge's prompt order (PromptStream), so
               step k samples the same prompts on both sides (with different random draws).
   Both processes start together and take turns step by step (bench_align's `Baton`), each
   timed on its own active clock. Reported: steady-state steps/s (steps after --skip-steps),
   start-up (process start to the first step: imports, Ray and its actors, DeepSpeed / model
   load, Trainer set-up), end-to-end (to trained and saved), llmforge's time per step split into
   generation / scoring / training / sync (its metrics.jsonl) and the mean reward over the
   measured steps of both.

    .venv/bin/python infra/bench/bench_rl.py [--steps 30] [--prompts 8] [--group 8]
        [--max-new 16] [--lr 1e-4] [--threads 2] [--hybrid 1] [--skip-steps 2] [--rollout-batch 16]
        [--rollout-lengths 32,128] [--only rollout|grpo] [--sequential] [--json PATH] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_align as ba  # noqa: E402  (Baton, PeakMemory, the child environment, DeepSpeed warm-up)

SETUP_DONE = "setup.json"


# ---------------------------------------------------------------------------------------------
# Setup (parent)

def _sft_config(args, work: Path):
    from alignment.job import config_class
    from llmforge.common.config import load_config

    sets = {"model": str(work / "base"), "data.path": str(work / "data" / "sft.jsonl"), "data.val_fraction": 0.0,
            "data.max_len": 64, "run.storage_path": str(work / "setup"), "run.name": "sft",
            "train.max_steps": args.sft_steps, "train.micro_batch_size": 32, "train.log_every": 50,
            "train.eval_every": 0, "train.checkpoint_every": 0, "train.precision": "fp32",
            "train.threads": args.threads, "scaling.cpus_per_worker": args.threads, "optim.lr": 3e-3,
            "optim.warmup_steps": 10, "optim.schedule": "constant"}
    return load_config(config_class("sft"), None, sets)


def _grpo_config(args, work: Path, name: str, setup: dict):
    from alignment.rl_driver import config_class
    from llmforge.common.config import load_config

    sets = {"model": setup["policy"], "data.path": setup["prompts"], "data.val_fraction": 0.0,
            "run.storage_path": str(work / "runs"), "run.name": name, "reward.function": "math",
            "train.max_steps": args.steps, "train.prompts_per_step": args.prompts, "group_size": args.group,
            "rollout.max_new_tokens": args.max_new, "rollout.batch_size": args.prompts * args.group,
            "train.micro_batch_size": args.prompts * args.group, "train.checkpoint_every": 0, "train.log_every": 1,
            "train.precision": "fp32", "train.threads": args.threads, "scaling.cpus_per_worker": args.threads,
            "optim.lr": args.lr, "optim.warmup_steps": 0, "optim.schedule": "constant", "optim.weight_decay": 0.0,
            "filter_constant_groups": bool(args.filter_constant_groups), "placement.hybrid": bool(args.hybrid)}
    return load_config(config_class("grpo"), None, sets)


def _setup(args, work: Path) -> dict:
    """Base model, SFT warm start, its HF export, the prompts and llmforge's prompt order."""
    done = work / SETUP_DONE
    if done.exists():
        return json.loads(done.read_text())
    import contextlib

    from alignment.job import run_align
    from alignment.synthetic import arithmetic_sft, arithmetic_task, write_jsonl
    from tests.support.tiny_checkpoint import base_checkpoint
    from training.export import export_hf
    from training.sources import resolve_model

    t = time.perf_counter()
    base_checkpoint(work / "base")
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    prompts = data / "prompts.jsonl"  # {"id", "prompt", "answer"} rows
    prompts.write_text("".join(json.dumps(r) + "\n" for r in arithmetic_task(args.n_prompts, seed=0)))
    write_jsonl(arithmetic_sft(arithmetic_task(4000, seed=1)), data / "sft.jsonl")
    with contextlib.redirect_stdout(sys.stderr):
        sft = run_align("sft", _sft_config(args, work), standalone=True, log=lambda *a: None)
    policy = resolve_model(sft["output"])
    hf = export_hf(policy.path, work / "hf_policy", overwrite=True)
    info = {"base": str(work / "base"), "policy": sft["output"], "policy_checkpoint": str(policy.path),
            "hf_policy": str(hf), "tokenizer": str(policy.tokenizer_path), "prompts": str(prompts),
            "sft_steps": args.sft_steps, "setup_s": time.perf_counter() - t}
    info.update(_plan_and_checks(args, work, info))
    tmp = work / f".{SETUP_DONE}.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, done)
    return info


def _plan_and_checks(args, work: Path, info: dict) -> dict:
    """The prompts of each RL step as llmforge's driver takes them (for TRL's sampler), a check
    that HF's chat template gives llmforge's prompt ids, and the SFT model's greedy reward."""
    import torch
    from transformers import AutoTokenizer

    from alignment.rewards import exact_match, math_reward
    from alignment.rl_driver import PromptStream, read_prompts
    from training.chat import ChatTokenizer
    from training.export import load_model
    from training.generate import SamplingParams, generate

    cfg = _grpo_config(args, work, "plan", info)
    chat = ChatTokenizer.from_file(info["tokenizer"])
    train, _, _ = read_prompts(cfg, chat, 512, log=lambda *a: None)
    stream = PromptStream(train, cfg.train.prompts_per_step, cfg.data.seed)
    plan = [p.id for s in range(args.max_steps_planned) for p in stream.take(s)]
    hf_tok = AutoTokenizer.from_pretrained(info["hf_policy"])
    same = sum(hf_tok.apply_chat_template([{"role": "user", "content": p.prompt}], add_generation_prompt=True,
                                          tokenize=True, return_dict=False) == p.ids for p in train)
    torch.set_num_threads(args.threads)
    model = load_model(info["policy_checkpoint"])
    sample = train[:64]
    out = generate(model, [p.ids for p in sample], SamplingParams(max_new_tokens=args.max_new, temperature=0.0,
                                                                  stop_token_ids=[chat.end_id]), pad_id=chat.pad_id)
    texts = [chat.decode(g.tokens) for g in out]
    return {"plan": plan, "chat_template_same": same, "n_train": len(train),
            "greedy_reward": sum(math_reward(t, p.row) for t, p in zip(texts, sample)) / len(sample),
            "greedy_exact": sum(exact_match(t, p.row) for t, p in zip(texts, sample)) / len(sample),
            "greedy_example": [sample[0].prompt, texts[0]]}


# ---------------------------------------------------------------------------------------------
# 1. Rollout: KV cache vs recomputing the prefix (one child process)

def recompute_generate(model, prompts: list[list[int]], new_tokens: int, pad_id: int) -> list[list[int]]:
    """Greedy decoding without a cache: at every step the full forward `model(ids)` over every
    row's prompt + what it generated so far (right-padded: causal attention never sees the
    padding after a row's last token), then the argmax of the logits at that last token."""
    import torch

    with torch.no_grad():
        batch = len(prompts)
        cur = torch.tensor([len(p) for p in prompts])
        ids = torch.full((batch, int(cur.max()) + new_tokens - 1), pad_id, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, :len(p)] = torch.tensor(p)
        rows, chosen = torch.arange(batch), []
        for step in range(new_tokens):
            logits = model(ids[:, :int(cur.max())])
            token = logits[rows, cur - 1].float().argmax(-1)
            chosen.append(token)
            if step < new_tokens - 1:
                ids[rows, cur] = token
                cur += 1
        return torch.stack(chosen, 1).tolist()


def _chat_prompts(n: int, seed: int) -> list[list[dict]]:
    """Long conversations ending in an arithmetic question: a system turn and earlier turns
    (repeat / reverse exchanges and solved sums) before it, ~230 tokens each."""
    import random

    from alignment.synthetic import arithmetic_task, sft_task

    rng = random.Random(seed)
    system = ("You are a careful assistant. Answer every arithmetic question with the final number after four "
              "hash marks, like #### 42, and repeat or reverse word lists exactly as asked.")
    earlier = sft_task(6 * n, seed=seed) + sft_task(6 * n, seed=seed + 1, reverse=True)
    sums = arithmetic_task(3 * n + n, seed=seed + 2)
    out = []
    for i in range(n):
        msgs = [{"role": "system", "content": system}]
        for conv in rng.sample(earlier, 4):
            msgs += conv.messages
        for row in sums[3 * i:3 * i + 3]:
            msgs += [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": f"#### {row['answer']}"}]
        msgs.append({"role": "user", "content": sums[3 * n + i]["prompt"]})
        out.append(msgs)
    return out


def _rollout_child(args, work: Path) -> dict:
    import torch

    from alignment.synthetic import arithmetic_task
    from training.chat import ChatTokenizer
    from training.export import load_model
    from training.generate import SamplingParams, generate

    torch.set_num_threads(args.threads)
    setup = json.loads((work / SETUP_DONE).read_text())
    model = load_model(setup["policy_checkpoint"]).eval()
    chat = ChatTokenizer.from_file(setup["tokenizer"])
    sets = {"arithmetic": [chat.prompt_ids([{"role": "user", "content": r["prompt"]}])
                           for r in arithmetic_task(args.rollout_batch, seed=7)],
            "chat": [chat.prompt_ids(m) for m in _chat_prompts(args.rollout_batch, seed=11)]}
    lengths = [int(x) for x in args.rollout_lengths.split(",")]
    rows = []
    for name, prompts in sets.items():
        for n in lengths:
            params = SamplingParams(max_new_tokens=n, temperature=0.0)  # no stop token: n tokens per row
            times: dict[str, list[float]] = {"kv": [], "recompute": []}
            kv_tokens = rec_tokens = None
            for _ in range(args.rollout_repeats + 1):  # interleaved, best of; the first is a warm-up
                t = time.perf_counter()
                kv_tokens = [g.tokens for g in generate(model, prompts, params, pad_id=chat.pad_id)]
                times["kv"].append(time.perf_counter() - t)
                t = time.perf_counter()
                rec_tokens = recompute_generate(model, prompts, n, chat.pad_id)
                times["recompute"].append(time.perf_counter() - t)
            best = {k: min(v[1:]) for k, v in times.items()}
            same_rows = sum(a == b for a, b in zip(kv_tokens, rec_tokens))
            first_diff = min((next(j for j, (x, y) in enumerate(zip(a, b)) if x != y)
                              for a, b in zip(kv_tokens, rec_tokens) if a != b), default=None)
            total = sum(len(t) for t in kv_tokens)
            rows.append({"prompts": name, "batch": len(prompts), "new_tokens": n,
                         "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
                         "prompt_tokens_max": max(map(len, prompts)), "tokens": total,
                         "kv_s": best["kv"], "recompute_s": best["recompute"], "times": times,
                         "kv_tokens_per_s": total / best["kv"], "recompute_tokens_per_s": total / best["recompute"],
                         "same_rows": same_rows, "first_diff_step": first_diff})
            print(f"  {name} x{n}: kv {total / best['kv']:,.0f} tok/s, recompute {total / best['recompute']:,.0f} "
                  f"tok/s, same tokens {same_rows}/{len(prompts)} rows", file=sys.stderr, flush=True)
    return {"rows": rows, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------
# 2. GRPO: llmforge vs TRL (two child processes taking turns)

def _llmforge_grpo(args, work: Path, name: str, baton: ba.Baton) -> dict:
    import ray

    from alignment.rl_driver import run_rl
    from training.trainer import read_metrics

    marks = {"imported": baton.active()}
    ray.init(address="local", num_cpus=args.threads, include_dashboard=False)
    marks["ray"] = baton.active()
    cfg = _grpo_config(args, work, name, json.loads((work / SETUP_DONE).read_text()))
    seen: dict = {"waits": []}

    def hook(event, step, run):
        if event != "before_generate":
            return
        if "first" not in seen:
            seen["first"] = baton.active()
        before = baton.waited
        baton.yield_turn()
        seen["waits"].append((baton.waited - before, baton.waited))

    def log(*parts):
        text = " ".join(str(p) for p in parts)
        for key in ("grpo:", "policy:"):  # the driver's start (prompts read), the trainer actor ready
            if text.startswith(key):
                marks.setdefault(key[:-1], baton.active())
        print(f"[{baton.active() - args.t0:6.1f} s]", text, file=sys.stderr, flush=True)

    results = run_rl("grpo", cfg, log=log, hooks=[hook])
    e2e = baton.active() - args.t0
    rows = [r for r in read_metrics(Path(results["output"]) / "metrics.jsonl") if "reward_mean" in r]
    ends = [r["time"] - total for r, (_, total) in zip(rows, seen["waits"])]
    out = ba._timing(ends, args.skip_steps, args.t0, seen["first"])
    keys = ("time_generation", "time_scoring", "time_training", "time_sync")
    measured = rows[args.skip_steps:]
    split = {k: sum(r[k] for r in measured) / len(measured) for k in keys}
    split["step_seconds"] = sum(r["step_seconds"] - w for r, (w, _) in zip(measured, seen["waits"][args.skip_steps:])) \
        / len(measured)
    ray.shutdown()
    edges = [("imports", args.t0, "imported"), ("ray.init", "imported", "ray"), ("driver", "ray", "grpo"),
             ("actors", "grpo", "policy"), ("first sync", "policy", None)]
    startup = {k: (seen["first"] if b is None else marks[b]) - (a if isinstance(a, float) else marks[a])
               for k, a, b in edges}
    return {**out, "e2e_s": e2e, "rss_mib": ba._rss_mib(), "split": split, "startup_split": startup,
            "reward_mean": sum(r["reward_mean"] for r in measured) / len(measured),
            "rewards": [r["reward_mean"] for r in rows], "sequences_trained": [r["sequences_trained"] for r in rows],
            "response_length": sum(r["response_length"] for r in measured) / len(measured),
            "output": results["output"], "threads": cfg.train.threads}


def _trl_grpo(args, work: Path, name: str, baton: ba.Baton) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from alignment.rewards import math_reward
    from llmforge.common.rows import iter_rows

    torch.set_num_threads(args.threads)
    setup = json.loads((work / SETUP_DONE).read_text())
    rows = [row for _, _, row in iter_rows(setup["prompts"])]
    index = {r["id"]: i for i, r in enumerate(rows)}
    plan = [index[i] for i in setup["plan"][:args.steps * args.prompts]]
    dataset = Dataset.from_list([{"id": r["id"], "prompt": [{"role": "user", "content": r["prompt"]}],
                                  "answer": r["answer"]} for r in rows])
    ends: list[float] = []
    seen: dict = {}
    G = args.group

    def math(prompts, completions, answer, **_):
        """alignment.rewards.math_reward on TRL's conversational completions."""
        return [math_reward(c[0]["content"], {"answer": a}) for c, a in zip(completions, answer)]

    class Turns(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if "first" not in seen:
                seen["first"], seen["threads"] = baton.active(), torch.get_num_threads()
            baton.yield_turn()

        def on_step_end(self, *a, **k):
            ends.append(baton.active())

    class Replay(torch.utils.data.Sampler):
        """llmforge's prompt order, each prompt repeated G times (TRL's RepeatSampler layout)."""

        def __len__(self):
            return len(plan) * G

        def __iter__(self):
            return iter([i for i in plan for _ in range(G)])

    class BenchGRPOTrainer(GRPOTrainer):
        def _get_train_sampler(self, dataset=None):
            return Replay()

    tokenizer = AutoTokenizer.from_pretrained(setup["hf_policy"])
    model = AutoModelForCausalLM.from_pretrained(setup["hf_policy"], dtype=torch.float32)
    config = GRPOConfig(
        output_dir=str(work / "runs" / name), max_steps=args.steps, per_device_train_batch_size=args.prompts * G,
        gradient_accumulation_steps=1, steps_per_generation=1, num_generations=G, num_iterations=1,
        max_completion_length=args.max_new, temperature=1.0, top_p=1.0, top_k=0, beta=0.0, epsilon=0.2,
        loss_type="dapo", scale_rewards="group", learning_rate=args.lr, lr_scheduler_type="constant",
        warmup_steps=0, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False, logging_steps=1,
        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        seed=0, shuffle_dataset=False)
    trainer = BenchGRPOTrainer(model=model, reward_funcs=[math], args=config, train_dataset=dataset,
                               processing_class=tokenizer, callbacks=[Turns()])
    trainer.train()
    trainer.save_model(str(work / "runs" / name / "final"))
    e2e = baton.active() - args.t0
    logs = [h for h in trainer.state.log_history if "reward" in h]
    measured = logs[args.skip_steps:]
    out = ba._timing(ends, args.skip_steps, args.t0, seen["first"])
    return {**out, "e2e_s": e2e, "rss_mib": ba._rss_mib(), "threads": seen.get("threads"),
            "reward_mean": sum(h["reward"] for h in measured) / len(measured),
            "rewards": [h["reward"] for h in logs],
            "response_length": sum(h.get("completions/mean_length", float("nan")) for h in measured) / len(measured)}


def _child(args) -> None:
    work, name = Path(args.work), args.child
    who = name.partition("@")[0]
    if who == "rollout":
        print("RESULT " + json.dumps(_rollout_child(args, work)), flush=True)
        return
    baton = ba.Baton(Path(args.baton), name)
    baton.acquire()  # before any heavy import: the start-up is timed on the active clock too
    try:
        if who == "llmforge-grpo":
            result = _llmforge_grpo(args, work, name, baton)
        elif who == "trl-grpo":
            result = _trl_grpo(args, work, name, baton)
        else:
            raise SystemExit(f"unknown child {who}")
        print("RESULT " + json.dumps(result), flush=True)
    finally:
        baton.release(done=True)


# ---------------------------------------------------------------------------------------------
# Parent: run, measure the process trees, compare

def _run_group(args, work: Path, children: list[str]) -> dict[str, dict]:
    """bench_align's `_run_group` for this file: start `children` together, taking turns (or
    one after another with --sequential); returns each one's RESULT."""
    keep = {"child", "work", "only", "json", "t0", "baton", "sequential", "max_steps_planned"}
    return ba.run_children(args, work, children, __file__, keep, _child_result)


def _child_result(child: str, r: dict) -> dict:
    stdout, err = r.get("stdout", ""), r["log"].read_text()
    r["log"].write_text(stdout + "\n--- stderr ---\n" + err)
    line = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    if r["proc"].returncode or not line:
        raise SystemExit(f"{child} failed (rc {r['proc'].returncode}); log {r['log']}:\n{stdout[-2000:]}\n{err[-4000:]}")
    result = json.loads(line[-1][7:])
    result["tree_mib"] = r["mem"].peak / 2**20
    if "steady_s" in result:
        print(f"  {child}: {result['steady_steps']} steps in {result['steady_s']:.1f} s steady, start-up "
              f"{result['startup_s']:.1f} s, end-to-end {result['e2e_s']:.1f} s", flush=True)
    return result


def _rollout_report(args, res: dict) -> dict:
    print(f"\n1. Rollout, greedy, batch {args.rollout_batch}, no stop token (every row makes N tokens), "
          f"{res['threads']} threads, best of {args.rollout_repeats}; tokens/s = new tokens / wall time")
    print(f"{'prompts':<12}{'prompt tok':>11}{'N new':>7}{'KV cache':>12}{'recompute':>12}{'ratio':>8}"
          f"{'same tokens':>13}")
    for r in res["rows"]:
        ratio = r["kv_tokens_per_s"] / r["recompute_tokens_per_s"]
        same = f"{r['same_rows']}/{r['batch']} rows"
        print(f"{r['prompts']:<12}{r['prompt_tokens_mean']:>7.0f} avg{r['new_tokens']:>7}"
              f"{r['kv_tokens_per_s']:>12,.0f}{r['recompute_tokens_per_s']:>12,.0f}{ratio:>7.1f}x{same:>13}")
    bad = [r for r in res["rows"] if r["same_rows"] != r["batch"]]
    print("KV cache = training.generate.generate (left-padded batch, prefill then one token per row per "
          "forward); recompute = full model(ids) over each row's whole prefix every step (right-padded). "
          + ("Both chose the same tokens for every row." if not bad else
             f"TOKENS DIFFER in {len(bad)} setting(s): first differing step " +
             ", ".join(f"{r['prompts']} x{r['new_tokens']}: {r['first_diff_step']}" for r in bad)))
    return res


def _grpo_report(args, setup: dict, best: dict) -> dict:
    lf, trl = best["llmforge-grpo"], best["trl-grpo"]
    rate = {w: r["steady_steps"] / r["steady_s"] for w, r in best.items()}
    seqs = args.prompts * args.group
    print(f"\n2. GRPO, {args.steps} steps of {args.prompts} prompts x G={args.group} = {seqs} sequences, max "
          f"{args.max_new} new tokens, lr {args.lr}, one optimizer step per rollout batch; steady = steps "
          f"{args.skip_steps + 1}-{args.steps}; {args.threads} threads; "
          f"{'one after another' if args.sequential else 'taking turns step by step'}")
    print(f"{'':<34}{'steps/s':>9}{'seq/s':>8}{'start-up':>10}{'end-to-end':>12}{'tree mem':>10}{'reward':>8}"
          f"{'resp len':>10}")
    layout = "hybrid" if args.hybrid else "+ Rollout"
    labels = (("llmforge-grpo", f"llmforge grpo (ZeRO-0, {layout})"), ("trl-grpo", "TRL GRPOTrainer"))
    for who, label in labels:
        r = best[who]
        print(f"{label:<34}{rate[who]:>9.3f}{rate[who] * seqs:>8.1f}{r['startup_s']:>8.1f} s{r['e2e_s']:>10.1f} s"
              f"{r['tree_mib']:>6.0f} MiB{r['reward_mean']:>8.3f}{r['response_length']:>10.1f}")
    ratio = rate["llmforge-grpo"] / rate["trl-grpo"]
    med = ba._median_ratio(trl, lf)
    print(f"llmforge / TRL: {ratio:.2f}x steps/s (target >= 1.5x: {'OK' if ratio >= 1.5 else 'BELOW TARGET'}; "
          f"median step {med:.2f}x); start-up TRL {trl['startup_s']:.1f} s vs llmforge {lf['startup_s']:.1f} s")
    s = lf["split"]
    other = s["step_seconds"] - sum(s[k] for k in ("time_generation", "time_scoring", "time_training", "time_sync"))
    print(f"llmforge per step (mean over the steady steps, active clock): {s['step_seconds'] * 1000:.0f} ms = "
          f"generation {s['time_generation'] * 1000:.0f} + scoring {s['time_scoring'] * 1000:.0f} + training "
          f"{s['time_training'] * 1000:.0f} + sync {s['time_sync'] * 1000:.0f} + other {other * 1000:.0f} ms; "
          f"TRL median step {_median(trl['step_s']) * 1000:.0f} ms")
    print("llmforge start-up: " + ", ".join(f"{k} {v:.1f} s" for k, v in lf["startup_split"].items()) +
          f" (actors: {'' if args.hybrid else 'Rollout and '}the DeepSpeed PolicyTrainer started and loaded; the math "
          "reward runs in the driver)")
    print(f"mean rollout reward over the steady steps (math: 1 correct, 0.1 format only, 0 none): llmforge "
          f"{lf['reward_mean']:.3f}, TRL {trl['reward_mean']:.3f}; same prompts per step, different random draws; "
          f"sequences trained per step (llmforge): {sorted(set(lf['sequences_trained']))}")
    print(f"start model: base_checkpoint + SFT warm start ({setup['sft_steps']} steps), greedy reward "
          f"{setup['greedy_reward']:.3f}, exact match {setup['greedy_exact']:.2f} on 64 prompts; HF chat template = "
          f"llmforge's prompt ids for {setup['chat_template_same']}/{setup['n_train']} prompts")
    return {"steps_per_s": rate, "ratio_vs_trl": ratio, "median_step_ratio": med, "runs": best}


def _median(xs):
    import statistics

    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="GRPO steps (rollout + one optimizer step)")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="samples per prompt (G)")
    ap.add_argument("--max-new", type=int, default=16, help="max completion tokens")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--filter-constant-groups", action="store_true",
                    help="llmforge's default: skip the groups whose rewards are all equal (TRL trains on them)")
    ap.add_argument("--n-prompts", type=int, default=1000, help="arithmetic prompts in the RL prompt file")
    ap.add_argument("--sft-steps", type=int, default=300, help="SFT warm-start steps (setup)")
    ap.add_argument("--rollout-batch", type=int, default=16)
    ap.add_argument("--rollout-lengths", default="32,128")
    ap.add_argument("--rollout-repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hybrid", type=int, default=1, help="1: placement.hybrid (the trainer generates); 0: a "
                    "Rollout actor and weight sync each step")
    ap.add_argument("--skip-steps", type=int, default=2, help="first steps left out of the steady state")
    ap.add_argument("--sequential", action="store_true", help="run one after another instead of taking turns")
    ap.add_argument("--only", choices=("rollout", "grpo"))
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--work", help="keep the work files here; its setup (models, data) is reused next time")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--baton", help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.max_steps_planned = 1000
    if args.child:
        return _child(args)
    if args.steps <= args.skip_steps:
        raise SystemExit("--steps must exceed --skip-steps")

    tmp = None
    if args.work:
        work = Path(args.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
        import shutil

        for old in ("runs", "baton", "logs", "hf_home"):  # a fresh start: llmforge would resume its runs
            shutil.rmtree(work / old, ignore_errors=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-rl-")
        work = Path(tmp.name)
    t = time.perf_counter()
    setup = _setup(args, work)
    warm = ba._warm_extensions(args, work)
    print(f"setup {time.perf_counter() - t:.0f} s in {work} (models and data {setup['setup_s']:.0f} s when made; "
          f"DeepSpeed's CPU op {warm:.0f} s)", flush=True)
    report: dict = {"setup": {k: v for k, v in setup.items() if k != "plan"}, "threads": args.threads}
    if args.only in (None, "rollout"):
        res = _run_group(args, work, ["rollout"])
        report["rollout"] = _rollout_report(args, res["rollout"])
    if args.only in (None, "grpo"):
        res = _run_group(args, work, ["llmforge-grpo@0", "trl-grpo@0"])
        report["grpo"] = _grpo_report(args, setup, {c.partition("@")[0]: r for c, r in res.items()})
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"results: {args.json}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
