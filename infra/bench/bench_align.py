"""Benchmark: `llmforge align dpo|sft` vs TRL's DPOTrainer / SFTTrainer, same model, same data,
same batches in the same order, same threads, fp32 on CPU.

Setup (not timed): the data pipeline's BPE tokenizer (tests.support.text_shards, real text when
../shared/data is here), a random `Llama` of --dim x --layers as the reference / SFT start, and
a policy = reference + Gaussian noise (so DPO's first loss is not the trivial log 2). Each is
written as an llmforge checkpoint and exported to a Hugging Face directory (`save_hf_dir`),
which TRL loads with AutoModelForCausalLM. The examples are tokenized once by
`alignment.examples.prepare_examples` (what `align` does) to fix the ids and the order.

DPO (--steps optimizer steps of --batch pairs, LLaMA-Factory's dpo_en_demo):
  llmforge   `run_align("dpo")` standalone: reference log-probs precomputed by a Ray Data pass,
             DeepSpeed ZeRO-2 loop, final checkpoint.
  TRL        DPOTrainer with ref_model = the reference, (a) default (reference forward every
             step) and (b) precompute_ref_log_probs=True; save_model at the end.
  TRL tokenizes the same conversations itself (its chat-template path, timed as its start-up)
  and the benchmark checks those ids against llmforge's. Its truncation differs (keep_start
  cuts the replies and drops pairs whose prompt fills max_length; llmforge cuts the prompt from
  the left), so both then train on llmforge's truncated ids: TRL 1.16 has no switch for
  pre-tokenized preference data, so a subclass returns them from `_prepare_dataset`, and a
  sampler replays llmforge's order (training.data.GlobalOrder), so step k is the same batch.
SFT (--sft-steps of --sft-batch, LLaMA-Factory's alpaca_en_demo, no packing on either side):
  TRL's own tokenization and truncation (prompt-completion, completion-only loss) are used as
  is; the benchmark checks its ids and loss masks equal llmforge's, row for row.

The runs of one comparison (the three DPO runs, then the two SFT runs) are separate processes
started together that take turns (`Baton`): one works, the others sleep, switching before every
optimizer step; every run is timed on its own active clock (wall time minus its waiting), so
all see the machine's background load alike (--sequential runs them one after another).
Reported per run: steady-state pairs/s or tokens/s (the steps after --skip-steps, from
llmforge's metrics.jsonl times / a TRL callback at each step end), start-up (process start to
the first step: imports, tokenization, reference pass, DeepSpeed / Trainer set-up), end-to-end
(process start to trained and saved), peak RSS of the training process (ru_maxrss), peak memory
of its whole process tree (llmforge DPO: Ray's processes and the reference actor too), and the
first-batch loss of both, which must agree to 1e-4.

    .venv/bin/python infra/bench/bench_align.py [--steps 20] [--batch 4] [--max-len 512]
        [--sft-steps 20] [--sft-batch 8] [--dim 256] [--layers 4] [--threads 2] [--rounds 1]
        [--sequential] [--only dpo|sft] [--json PATH] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data" / "preference_sft"
DPO_FILE = SHARED / "llamafactory_dpo_en_demo.json"
SFT_FILE = SHARED / "llamafactory_alpaca_en_demo.json"
LOSS_TOL = 1e-4
DPO_LR, SFT_LR = 5e-5, 1e-4  # alignment.config's defaults, used by both sides


# ---------------------------------------------------------------------------------------------
# Setup (parent)

def _align_config(algorithm: str, args, work: Path, name: str):
    """The config `llmforge align` builds from --model/--data/--output and --set, for this bench."""
    from alignment.job import config_class
    from llmforge.common.config import load_config

    dpo = algorithm == "dpo"
    sets = {
        "model": str(work / ("policy" if dpo else "base")),
        "data.path": json.loads((work / "data" / "files.json").read_text())["pairs" if dpo else "sft"],
        # DPO holds out one pair (the least fraction > 0 does): with none, `align dpo`'s reference
        # pass fails (alignment/reference.py concatenates an empty val table typed null). Its
        # end-of-run evaluation is then one pair, after the last timed step.
        "data.val_fraction": 1e-9 if dpo else 0.0, "data.max_len": args.max_len if dpo else args.sft_max_len,
        "run.storage_path": str(work / "runs"), "run.name": name,
        "train.max_steps": args.steps if dpo else args.sft_steps,
        "train.micro_batch_size": args.batch if dpo else args.sft_batch,
        "train.log_every": 1, "train.eval_every": 0, "train.checkpoint_every": 0,
        "train.precision": "fp32", "train.threads": args.threads, "scaling.cpus_per_worker": args.threads,
        "optim.lr": DPO_LR if dpo else SFT_LR, "optim.warmup_steps": 0, "optim.schedule": "constant",
        "optim.weight_decay": 0.0,
    }
    if dpo:
        sets.update({"reference": str(work / "base"), "beta": args.beta})
    return load_config(config_class(algorithm), None, sets)


def _models(args, work: Path) -> dict:
    """Tokenizer, reference (= SFT start) and perturbed policy, as llmforge checkpoints and HF dirs."""
    import torch
    from tokenizers import Tokenizer

    from tests.support.text_shards import build_shards
    from tests.support.tiny_checkpoint import write_checkpoint
    from training.export import save_hf_dir
    from training.model import Llama, ModelConfig, count_parameters

    shards, real = build_shards(work / "shards", vocab_size=args.vocab)
    tok = shards / "tokenizer.json"
    vocab = Tokenizer.from_file(str(tok)).get_vocab_size()
    cfg = ModelConfig(vocab_size=vocab, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                      max_seq_len=max(args.max_len, args.sft_max_len))
    torch.manual_seed(0)
    base = Llama(cfg).eval()
    policy = Llama(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        state = {k: v + args.perturb * cfg.init_std * torch.randn(v.shape, generator=gen)
                 for k, v in base.state_dict().items()}
    policy.load_state_dict(state)
    for name, model in (("base", base), ("policy", policy)):
        write_checkpoint(work / name, model, tok)
        save_hf_dir(cfg, model.state_dict(), work / f"hf_{name}", tokenizer_path=tok)
    return {"tokenizer": tok, "vocab": vocab, "params": count_parameters(cfg), "real_text": real,
            "config": cfg.model_dump()}


def _data(work: Path) -> dict:
    from alignment.synthetic import preference_task, sft_task, write_jsonl

    out = work / "data"
    out.mkdir(parents=True, exist_ok=True)
    info, files = {}, {}
    for key, shared, make, name in (("pairs", DPO_FILE, lambda: preference_task(300, seed=0), "pairs.jsonl"),
                                    ("sft", SFT_FILE, lambda: sft_task(1000, seed=0), "sft.jsonl")):
        if shared.exists():
            files[key], info[key] = str(shared), shared.name
        else:
            files[key] = str(write_jsonl(make(), out / name))
            info[key] = f"GENERATED {name} (alignment.synthetic; ../shared/data absent)"
    (out / "files.json").write_text(json.dumps(files))  # the children read the same paths
    return info


def _expected(kind: str, args, work: Path, tok: Path) -> dict:
    """llmforge's examples for this run (alignment.examples), the TRL rows made from them, and the
    order of the first steps x batch samples (training.data)."""
    import pyarrow.parquet as pq

    from alignment.examples import prepare_examples
    from alignment.formats import read_preferences, read_sft
    from training.chat import ChatTokenizer
    from training.data import GlobalOrder, rank_micro_batches

    dpo = kind == "dpo"
    cfg = _align_config(kind, args, work, f"expected-{kind}")
    chat = ChatTokenizer.from_file(str(tok))
    out = work / "expected" / kind
    prepared = prepare_examples("pairs" if dpo else "sft", cfg, chat, tok, cfg.data.max_len, out, log=lambda *_: None)
    table = pq.read_table(prepared.directory / "train.parquet").to_pylist()
    steps, batch = cfg.train.max_steps, cfg.train.micro_batch_size
    order = GlobalOrder(len(table), cfg.data.seed)
    plan = [int(i) for s in range(steps) for i in rank_micro_batches(order, s, batch, 0, 1, 1)[0]]
    rows = []
    if dpo:
        records = {r.id: r for r in read_preferences(cfg.data.path)[0]}
        for ex in table:
            rec = records[ex["id"]]
            p = ex["chosen_mask"].index(1)
            for side in ("chosen", "rejected"):
                ids, mask = ex[f"{side}_ids"], ex[f"{side}_mask"]
                if mask != [0] * p + [1] * (len(ids) - p) or ids[:p] != ex["chosen_ids"][:p]:
                    raise SystemExit(f"{ex['id']}: {side} is not shared prompt + completion; cannot split for TRL")
            full_c = chat.encode(rec.chosen_messages(), train_on="last")
            full_r = chat.encode(rec.rejected_messages(), train_on="last")
            rows.append({"id": ex["id"], "prompt": rec.prompt, "chosen": rec.chosen, "rejected": rec.rejected,
                         "prompt_ids": ex["chosen_ids"][:p], "chosen_ids": ex["chosen_ids"][p:],
                         "rejected_ids": ex["rejected_ids"][p:], "full_chosen": full_c.ids,
                         "full_rejected": full_r.ids, "full_prompt_len": full_c.mask.index(1)})
        lengths = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in rows]
    else:
        records = {r.id: r for r in read_sft(cfg.data.path)[0]}
        for ex in table:
            msgs = records[ex["id"]].messages
            rows.append({"id": ex["id"], "prompt": msgs[:-1], "completion": msgs[-1:], "ids": ex["ids"],
                         "mask": ex["mask"]})
        lengths = [len(r["ids"]) for r in rows]
    path = work / "expected" / f"{kind}.json"
    path.write_text(json.dumps({"rows": rows, "order": plan}))
    return {"path": str(path), "n_train": len(rows), "record": prepared.record, "order": plan,
            "lengths": lengths, "directory": str(prepared.directory)}


# ---------------------------------------------------------------------------------------------
# Children

def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Baton:
    """Turns between the runs of one comparison, which start together: only the holder works,
    the others block reading their FIFO (no polling, no wake-ups), so the machine's background
    load falls on every run alike, step by step. `active()` is wall time minus the time spent
    waiting: each run is timed as if it had the machine to itself. The parent keeps every FIFO
    open (a token is never lost) and passes the turn on if a holder dies."""

    def __init__(self, directory: Path, me: str):
        self.dir, self.me, self.waited, self.holding = directory, me, 0.0, False
        self.fd = os.open(directory / f"{me}.fifo", os.O_RDWR)

    def active(self) -> float:
        return time.time() - self.waited

    def acquire(self) -> None:
        t = time.time()
        while not self.holding:
            os.read(self.fd, 1)
            self.holding = (self.dir / "turn").read_text() == self.me
        self.waited += time.time() - t

    def release(self, done: bool = False) -> None:
        if done:
            (self.dir / f"{self.me}.done").touch()
        if self.holding:
            self.holding = False
            pass_turn(self.dir, self.me)

    def yield_turn(self) -> None:
        """Let the next run take a turn, then continue."""
        self.release()
        self.acquire()


def pass_turn(directory: Path, current: str | None) -> None:
    """The turn goes to the next run (in order.json, after `current`) that is not done."""
    order = json.loads((directory / "order.json").read_text())
    i = order.index(current) if current in order else len(order) - 1
    live = [n for n in order[i + 1:] + order[:i + 1] if not (directory / f"{n}.done").exists()]
    tmp = directory / f".turn.{os.getpid()}"
    tmp.write_text(live[0] if live else "")
    os.replace(tmp, directory / "turn")
    if live:
        fd = os.open(directory / f"{live[0]}.fifo", os.O_RDWR)
        os.write(fd, b"t")
        os.close(fd)


def _timing(ends: list[float], skip: int, t0: float, first_step: float) -> dict:
    """Steady state: from the end of step `skip` to the end of the last step (active clock)."""
    steps = [b - a for a, b in zip(ends[skip - 1:], ends[skip:])]
    return {"steady_s": ends[-1] - ends[skip - 1], "steady_steps": len(steps), "step_s": steps,
            "startup_s": first_step - t0}


class _StepTurns:
    """A step hook (training.loop, called before each optimizer step): the start-up ends at the
    first call; each call gives the other runs a turn and notes the waiting so far."""

    def __init__(self, baton: Baton):
        self.baton, self.first, self.waited = baton, None, []

    def __call__(self, step, rank, run_dir):
        if self.first is None:
            self.first = self.baton.active()
        self.baton.yield_turn()
        self.waited.append(self.baton.waited)  # constant until the next call: this step's row


def _llmforge(args, work: Path, kind: str, name: str, baton: Baton) -> dict:
    from alignment.job import run_align
    from training.trainer import read_metrics

    cfg = _align_config(kind, args, work, name)
    marks: dict[str, float] = {}

    def log(*parts):
        text = " ".join(str(p) for p in parts)
        for key in ("examples:", "reference:"):
            if text.startswith(key):
                marks[key[:-1]] = baton.active()
        print(f"[{baton.active() - args.t0:6.1f} s]", text, file=sys.stderr, flush=True)

    turns = _StepTurns(baton)
    results = run_align(kind, cfg, standalone=True, log=log, step_hooks=[turns])
    e2e = baton.active() - args.t0
    rss = _rss_mib()
    rows = read_metrics(Path(results["output"]) / "metrics.jsonl")
    ends = [r["time"] - w for r, w in zip(rows, turns.waited)]  # metrics times on the active clock
    out = _timing(ends, args.skip_steps, args.t0, turns.first)
    if "reference" in marks:
        out["reference_s"] = marks["reference"] - marks["examples"]
    return {**out, "e2e_s": e2e, "rss_mib": rss, "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
            "output": results["output"], "threads": cfg.train.threads}


def _trl_common(args, work: Path, name: str, plan: list[int], batch: int, baton: Baton):
    import torch
    from transformers import TrainerCallback

    torch.set_num_threads(args.threads)
    ends: list[float] = []
    seen: dict = {}

    class Turns(TrainerCallback):
        """Start-up ends at the first step; each step begins by giving the other runs a turn."""

        def on_step_begin(self, *a, **k):
            if "first" not in seen:
                seen["first"], seen["threads"] = baton.active(), torch.get_num_threads()
            baton.yield_turn()

        def on_step_end(self, *a, **k):
            ends.append(baton.active())

    class Replay(torch.utils.data.Sampler):
        """llmforge's sample order (GlobalOrder), so TRL's step k is llmforge's step k."""

        def __len__(self):
            return len(plan)

        def __iter__(self):
            return iter(plan)

    common = dict(output_dir=str(work / "runs" / name), max_steps=len(plan) // batch,
                  per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                  lr_scheduler_type="constant", warmup_steps=0, adam_beta1=0.9, adam_beta2=0.95,
                  adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
                  bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False, logging_steps=1,
                  save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                  dataloader_num_workers=0, seed=0)
    return Turns(), Replay, ends, seen, common


def _trl_dpo(args, work: Path, name: str, precompute: bool, baton: Baton) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    expected = json.loads((work / "expected" / "dpo.json").read_text())
    rows, plan = expected["rows"], expected["order"]
    turns, Replay, ends, seen, common = _trl_common(args, work, name, plan, args.batch, baton)
    excluded = [0.0]  # seconds spent on the benchmark's own checks, not TRL's work
    reference_s = [0.0]
    check: dict = {}
    conversations = Dataset.from_list([
        {"id": r["id"], "prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    by_id = {r["id"]: r for r in rows}

    class BenchDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args_, dataset_name):
            # TRL's own tokenization of the conversations (its start-up work), compared whole: with
            # max_length, TRL's keep_start filter would drop the pairs whose prompt fills it.
            limit, args_.max_length = args_.max_length, None
            try:
                natural = super()._prepare_dataset(dataset, processing_class, args_, dataset_name)
            finally:
                args_.max_length = limit
            t = time.perf_counter()
            same = dropped = cut = 0
            for ex in natural:
                r = by_id[ex["id"]]
                p = ex["prompt_ids"]
                same += (p + ex["chosen_ids"] == r["full_chosen"] and p + ex["rejected_ids"] == r["full_rejected"]
                         and len(p) == r["full_prompt_len"])
                dropped += len(p) >= limit
                cut += len(p) < limit < len(p) + max(len(ex["chosen_ids"]), len(ex["rejected_ids"]))
            check.update(trl_tokenized=len(natural), identical=same, total=len(rows), keep_start_drops=dropped,
                         keep_start_cuts_reply=cut)
            pretokenized = Dataset.from_list([{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
                                              for r in rows])
            excluded[0] += time.perf_counter() - t
            return pretokenized

        def _get_train_sampler(self, train_dataset=None):
            return Replay()

        def _precompute_ref_logps(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._precompute_ref_logps(*a, **k)
            finally:
                reference_s[0] += time.perf_counter() - t

    tokenizer = AutoTokenizer.from_pretrained(work / "hf_policy")
    model = AutoModelForCausalLM.from_pretrained(work / "hf_policy", dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(work / "hf_base", dtype=torch.float32)
    config = DPOConfig(**common, learning_rate=DPO_LR, beta=args.beta, loss_type=["sigmoid"],
                       max_length=args.max_len, precompute_ref_log_probs=precompute,
                       precompute_ref_batch_size=8)
    trainer = BenchDPOTrainer(model=model, ref_model=ref, args=config, train_dataset=conversations,
                              processing_class=tokenizer, callbacks=[turns])

    # The loss of llmforge's first batch at the initial weights, through TRL's own loss.
    t = time.perf_counter()
    first = [trainer.train_dataset[i] for i in plan[:args.batch]]
    with torch.no_grad():
        first_loss = float(trainer.compute_loss(trainer.model, trainer.data_collator(first)))
    for metrics in trainer._metrics.values():
        metrics.clear()
    excluded[0] += time.perf_counter() - t

    trainer.train()
    trainer.save_model(str(work / "runs" / name / "final"))
    e2e = baton.active() - args.t0 - excluded[0]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out = _timing(ends, args.skip_steps, args.t0 + excluded[0], seen["first"])
    if precompute:
        out["reference_s"] = reference_s[0]
    return {**out, "e2e_s": e2e, "rss_mib": _rss_mib(), "first_loss": first_loss, "first_logged_loss": losses[0],
            "last_loss": losses[-1], "threads": seen.get("threads"), "check": check}


def _trl_sft(args, work: Path, name: str, baton: Baton) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    expected = json.loads((work / "expected" / "sft.json").read_text())
    rows, plan = expected["rows"], expected["order"]
    turns, Replay, ends, seen, common = _trl_common(args, work, name, plan, args.sft_batch, baton)

    class BenchSFTTrainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset=None):
            return Replay()

    dataset = Dataset.from_list([{"id": r["id"], "prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(work / "hf_base")
    model = AutoModelForCausalLM.from_pretrained(work / "hf_base", dtype=torch.float32)
    config = SFTConfig(**common, learning_rate=SFT_LR, max_length=args.sft_max_len, packing=False)
    trainer = BenchSFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[turns])
    t = time.perf_counter()
    ds = trainer.train_dataset
    same = sum(ex["id"] == r["id"] and ex["input_ids"] == r["ids"]
               and [int(x != -100) for x in ex["labels"]] == r["mask"] for ex, r in zip(ds, rows))
    check = {"trl_tokenized": len(ds), "identical": same if len(ds) == len(rows) else 0, "total": len(rows)}
    excluded = time.perf_counter() - t
    if check["identical"] != len(rows):
        raise SystemExit(f"TRL's SFT examples differ from llmforge's: {check}")
    trainer.train()
    trainer.save_model(str(work / "runs" / name / "final"))
    e2e = baton.active() - args.t0 - excluded
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out = _timing(ends, args.skip_steps, args.t0 + excluded, seen["first"])
    return {**out, "e2e_s": e2e, "rss_mib": _rss_mib(), "first_loss": losses[0], "last_loss": losses[-1],
            "threads": seen.get("threads"), "check": check}


def _child(args) -> None:
    work, name = Path(args.work), args.child
    who = name.partition("@")[0]
    baton = Baton(Path(args.baton), name)
    baton.acquire()  # before any heavy import: the start-up is timed on the active clock too
    try:
        if who in ("llmforge-dpo", "llmforge-sft"):
            result = _llmforge(args, work, who.split("-")[1], name, baton)
        elif who in ("trl-dpo", "trl-dpo-pre"):
            result = _trl_dpo(args, work, name, who == "trl-dpo-pre", baton)
        elif who == "trl-sft":
            result = _trl_sft(args, work, name, baton)
        else:
            raise SystemExit(f"unknown child {who}")
        print("RESULT " + json.dumps(result), flush=True)
    finally:
        baton.release(done=True)
    if who.startswith("llmforge"):
        try:
            import ray

            ray.shutdown()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# Parent: run, measure the process trees, compare

class PeakMemory(threading.Thread):
    """Largest memory of a process and its descendants, sampled every `interval` s: the private
    pages (USS) of every process plus the shared pages of the largest one. Unlike PSS, this
    does not shrink when other runs map the same libraries at the same time."""

    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        import psutil

        self.proc, self.interval, self.peak = psutil.Process(pid), interval, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            private = shared = 0
            try:
                procs = [self.proc] + self.proc.children(recursive=True)
            except Exception:
                break
            for p in procs:
                try:
                    m = p.memory_full_info()
                except Exception:  # ended between listing and reading
                    continue
                private += m.uss
                shared = max(shared, m.rss - m.uss)
            self.peak = max(self.peak, private + shared)
            self.stop.wait(self.interval)


def _child_env(args, work: Path, child: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
            "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
            "TQDM_DISABLE": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": str(REPO),
            # A fresh datasets cache per run: TRL's precomputed reference log-probs are cached there.
            "HF_HOME": str(work / "hf_home" / child),
            "TORCH_EXTENSIONS_DIR": _extensions_dir()}


def _extensions_dir() -> str:
    """Where DeepSpeed's JIT-built CPU ops are cached: the benchmark's own directory unless set.
    (A cache shared with other checkouts is rebuilt whenever another venv built it last.)"""
    return os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "llmforge" / "bench_torch_extensions"))


def _warm_extensions(args, work: Path) -> float:
    """Build (once per venv) or load DeepSpeed's CPU comm op, as `align`'s first step would:
    a one-time install cost, not part of any run's start-up. Returns the seconds it took."""
    t = time.perf_counter()
    code = ("import torch; from training.loop import _init_distributed; _init_distributed(torch.device('cpu'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=_child_env(args, work, "warm-up"))
    if out.returncode:
        raise SystemExit(f"DeepSpeed warm-up failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t


def _run_group(args, work: Path, children: list[str]) -> dict[str, dict]:
    """Start `children` together, taking turns (or one after another with --sequential)."""
    keep = {"child", "work", "rounds", "only", "json", "t0", "baton", "sequential"}
    return run_children(args, work, children, __file__, keep, _child_result)


def run_children(args, work: Path, children: list[str], script: str, keep: set[str], child_result) -> dict[str, dict]:
    """Run `script --child NAME ...` for each of `children` with this run's flags (but `keep`),
    together and taking turns (`Baton`) or one after another (--sequential); each child's
    result is `child_result(name, its record)` (stdout, log, peak memory of its process tree)."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
             if k not in keep and v is not None and not isinstance(v, bool)]
    flags += [f"--{k.replace('_', '-')}" for k, v in vars(args).items() if k not in keep and v is True]
    groups = [[c] for c in children] if args.sequential else [children]
    results = {}
    for group in groups:
        baton = work / "baton" / group[0]
        baton.mkdir(parents=True, exist_ok=True)
        (baton / "order.json").write_text(json.dumps(group))
        (baton / "turn").write_text("")
        fifos = []
        for child in group:
            os.mkfifo(baton / f"{child}.fifo")
            fifos.append(os.open(baton / f"{child}.fifo", os.O_RDWR))  # held open: no token is lost
        pass_turn(baton, None)
        running = {}
        for child in group:
            log = work / "logs" / f"{child}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, script, "--child", child, "--work", str(work), "--baton", str(baton),
                    *flags, f"--t0={time.time()!r}"]
            out = log.open("w")
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=out, text=True,
                                    env=_child_env(args, work, child), cwd=REPO)
            mem = PeakMemory(proc.pid)
            mem.start()
            reader = threading.Thread(target=lambda p=proc, c=child: running[c].update(stdout=p.stdout.read()),
                                      daemon=True)
            running[child] = {"proc": proc, "mem": mem, "log": log, "file": out, "reader": reader}
            reader.start()
        while running:
            for child, r in list(running.items()):
                if r["proc"].poll() is None:
                    continue
                r["reader"].join()
                r["mem"].stop.set()
                r["mem"].join()
                r["file"].close()
                (baton / f"{child}.done").touch()
                if (baton / "turn").read_text() == child:  # it died holding the turn
                    pass_turn(baton, child)
                del running[child]
                try:
                    results[child] = child_result(child, r)
                except SystemExit:
                    _stop(running)
                    raise
            time.sleep(0.2)
        for fd in fifos:
            os.close(fd)
    return results


def _stop(running: dict) -> None:
    """Interrupt the runs still going (Python unwinds, Ray shuts down), then kill what is left."""
    import signal

    for r in running.values():
        r["proc"].send_signal(signal.SIGINT)
    for r in running.values():
        try:
            r["proc"].wait(30)
        except subprocess.TimeoutExpired:
            r["proc"].kill()


def _child_result(child: str, r: dict) -> dict:
    stdout, err = r.get("stdout", ""), r["log"].read_text()
    r["log"].write_text(stdout + "\n--- stderr ---\n" + err)
    line = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    if r["proc"].returncode or not line:
        raise SystemExit(f"{child} failed (rc {r['proc'].returncode}); log {r['log']}:\n{stdout[-2000:]}\n{err[-4000:]}")
    result = json.loads(line[-1][7:])
    result["tree_mib"] = r["mem"].peak / 2**20
    print(f"  {child}: {result['steady_steps']} steps in {result['steady_s']:.1f} s steady, start-up "
          f"{result['startup_s']:.1f} s, end-to-end {result['e2e_s']:.1f} s", flush=True)
    return result


def _same_examples(expected_dir: str, run_dir: str) -> bool:
    import pyarrow.parquet as pq

    a = pq.read_table(Path(expected_dir) / "train.parquet")
    b = pq.read_table(Path(run_dir) / "examples" / "train.parquet")
    return a.equals(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="DPO optimizer steps")
    ap.add_argument("--batch", type=int, default=4, help="DPO pairs per step")
    ap.add_argument("--max-len", type=int, default=512, help="DPO tokens per sequence")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--sft-steps", type=int, default=20)
    ap.add_argument("--sft-batch", type=int, default=8)
    ap.add_argument("--sft-max-len", type=int, default=512)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=1024, help="BPE vocabulary trained for the benchmark")
    ap.add_argument("--perturb", type=float, default=1.0, help="policy = reference + N(0, (perturb x init_std)^2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-steps", type=int, default=2, help="first steps left out of the steady-state rate")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the comparison; the best rate of each run counts")
    ap.add_argument("--sequential", action="store_true", help="run one after another instead of taking turns")
    ap.add_argument("--only", choices=("dpo", "sft"))
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--work", help="keep the work files here (default: a temporary directory)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--baton", help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)
    if min(args.steps, args.sft_steps) <= args.skip_steps:
        raise SystemExit("--steps and --sft-steps must exceed --skip-steps")

    tmp = None
    if args.work:
        work = Path(args.work).resolve()
        if work.exists() and any(work.iterdir()):
            if not (work / ".bench-align").exists():
                raise SystemExit(f"--work {work} is not empty and not an earlier bench_align directory")
            import shutil

            shutil.rmtree(work)  # a fresh start: llmforge would resume its runs, TRL reuse caches
        work.mkdir(parents=True, exist_ok=True)
        (work / ".bench-align").touch()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-align-")
        work = Path(tmp.name)
    t = time.perf_counter()
    models = _models(args, work)
    data = _data(work)
    kinds = [k for k in ("dpo", "sft") if args.only in (None, k)]
    expected = {k: _expected(k, args, work, models["tokenizer"]) for k in kinds}
    warm = _warm_extensions(args, work)
    print(f"setup {time.perf_counter() - t:.0f} s in {work} (DeepSpeed's CPU comm op loaded or JIT-built in "
          f"{warm:.0f} s, cached in {_extensions_dir()})", flush=True)

    children = {"dpo": ["llmforge-dpo", "trl-dpo", "trl-dpo-pre"], "sft": ["llmforge-sft", "trl-sft"]}
    best: dict[str, dict] = {}
    for r in range(args.rounds):
        for kind in kinds:
            results = _run_group(args, work, [f"{who}@{r}" for who in children[kind]])
            for child, res in results.items():
                who = child.partition("@")[0]
                if who.startswith("llmforge"):
                    res["same_examples"] = _same_examples(expected[kind]["directory"], res["output"])
                res["rate_steps_per_s"] = res["steady_steps"] / res["steady_s"]
                if who not in best or res["rate_steps_per_s"] > best[who]["rate_steps_per_s"]:
                    best[who] = {**res, "round": r}
    report = _report(args, models, data, expected, best, kinds)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"results: {args.json}")
    if tmp is not None:
        tmp.cleanup()


def _report(args, models, data, expected, best, kinds) -> dict:
    cfg = models["config"]
    print(f"\nmodel: Llama dim {cfg['dim']} x {cfg['n_layers']} layers, {cfg['n_heads']} heads, vocab "
          f"{models['vocab']} ({models['params'] / 1e6:.2f}M params), random init; policy = reference + noise "
          f"(x{args.perturb} init_std); fp32, {args.threads} torch threads each; every run in its own process, "
          f"{'one after another' if args.sequential else 'taking turns'}, best of {args.rounds} round(s)")
    report = {"model": {**cfg, "params": models["params"]}, "threads": args.threads, "rounds": args.rounds,
              "data": data, "runs": best}
    def head(rate: str) -> str:
        return (f"{'':<42}{rate:>10}{'start-up':>10}{'end-to-end':>12}{'peak RSS':>10}{'tree mem':>10}"
                f"{'1st loss':>10}{'last loss':>10}")

    if "dpo" in kinds:
        e = expected["dpo"]
        trunc = e["record"]["tokenize"]
        pairs = lambda w: args.batch * best[w]["rate_steps_per_s"]  # noqa: E731
        print(f"\nDPO: {data['pairs']}: {e['n_train']} pairs ({trunc['truncated']} truncated to {args.max_len} "
              f"tokens by llmforge's rule, {trunc['dropped_too_long'] + trunc['dropped_identical_after_truncation']} "
              f"dropped), {args.batch} pairs/step, {args.steps} steps, steady = steps {args.skip_steps + 1}-"
              f"{args.steps}, beta {args.beta}, lr {DPO_LR} constant")
        print(head("pairs/s"))
        rows = (("llmforge-dpo", "llmforge align dpo (cached ref, ZeRO-2)"),
                ("trl-dpo", "TRL DPOTrainer (ref forward every step)"),
                ("trl-dpo-pre", "TRL DPOTrainer precompute_ref_log_probs"))
        for who, label in rows:
            _row(label, pairs(who), best[who])
        ours = pairs("llmforge-dpo")
        r_default, r_pre = ours / pairs("trl-dpo"), ours / pairs("trl-dpo-pre")
        verdict = "OK" if r_default >= 1.5 else "BELOW TARGET"
        print(f"llmforge / TRL default: {r_default:.2f}x pairs/s (target >= 1.5x: {verdict}; median step "
              f"{_median_ratio(best['trl-dpo'], best['llmforge-dpo']):.2f}x); llmforge / TRL precompute: "
              f"{r_pre:.2f}x (median step {_median_ratio(best['trl-dpo-pre'], best['llmforge-dpo']):.2f}x); "
              f"end-to-end: TRL default / llmforge {best['trl-dpo']['e2e_s'] / best['llmforge-dpo']['e2e_s']:.2f}x, "
              f"TRL precompute / llmforge {best['trl-dpo-pre']['e2e_s'] / best['llmforge-dpo']['e2e_s']:.2f}x")
        print(f"reference log-probs before training: llmforge (Ray Data pass, Ray start included) "
              f"{best['llmforge-dpo'].get('reference_s', float('nan')):.1f} s, TRL precompute "
              f"{best['trl-dpo-pre'].get('reference_s', float('nan')):.1f} s")
        a, b = best["llmforge-dpo"]["first_loss"], best["trl-dpo"]["first_loss"]
        c = best["trl-dpo-pre"]["first_loss"]
        diff = max(abs(a - b), abs(a - c))
        print(f"first-batch DPO loss (same {args.batch} pairs, initial weights): llmforge {a:.7f}, TRL {b:.7f}, "
              f"TRL precompute {c:.7f}; max |diff| {diff:.1e} "
              f"({'OK' if diff <= LOSS_TOL else 'MISMATCH'} at {LOSS_TOL:g}; log 2 = 0.6931472)")
        chk = best["trl-dpo"]["check"]
        print(f"token ids: TRL's own chat-template tokenization = llmforge's for {chk['identical']}/{chk['total']} "
              f"pairs before truncation; TRL's keep_start at max_length {args.max_len} would drop "
              f"{chk['keep_start_drops']} pairs (prompt fills it) and cut the replies of {chk['keep_start_cuts_reply']}, "
              f"so both trained on llmforge's truncated ids (prompt cut from the left) in llmforge's order; "
              f"llmforge's run made the same examples: {best['llmforge-dpo']['same_examples']}")
        report["dpo"] = {"pairs_per_s": {w: pairs(w) for w, _ in rows}, "ratio_vs_trl": r_default,
                         "ratio_vs_trl_precompute": r_pre, "first_loss_diff": diff,
                         "examples": e["n_train"], "tokenize": trunc}
    if "sft" in kinds:
        e = expected["sft"]
        order, lengths = e["order"], e["lengths"]
        timed = order[args.skip_steps * args.sft_batch:args.sft_steps * args.sft_batch]
        tokens = sum(lengths[i] for i in timed)  # real (unpadded) tokens of the timed steps, same on both sides
        rate = lambda w: tokens / best[w]["steady_s"]  # noqa: E731
        trunc = e["record"]["tokenize"]
        print(f"\nSFT: {data['sft']}: {e['n_train']} examples ({trunc['truncated']} truncated to "
              f"{args.sft_max_len} tokens, {trunc['dropped_no_reply_tokens']} dropped), {args.sft_batch} per step, "
              f"{args.sft_steps} steps, no packing, completion-only loss, lr {SFT_LR} constant; tokens/s counts "
              f"real (unpadded) tokens")
        print(head("tokens/s"))
        for who, label in (("llmforge-sft", "llmforge align sft (ZeRO-2)"), ("trl-sft", "TRL SFTTrainer")):
            _row(label, rate(who), best[who])
        ratio = rate("llmforge-sft") / rate("trl-sft")
        chk = best["trl-sft"]["check"]
        print(f"llmforge / TRL: {ratio:.2f}x tokens/s (median step {_median_ratio(best['trl-sft'], best['llmforge-sft']):.2f}x); "
              f"end-to-end TRL / llmforge: {best['trl-sft']['e2e_s'] / best['llmforge-sft']['e2e_s']:.2f}x; first-step loss |diff| "
              f"{abs(best['llmforge-sft']['first_loss'] - best['trl-sft']['first_loss']):.1e}; TRL's own ids and "
              f"loss masks = llmforge's for {chk['identical']}/{chk['total']} examples; llmforge's run made the same "
              f"examples: {best['llmforge-sft']['same_examples']}")
        report["sft"] = {"tokens_per_s": {w: rate(w) for w in ("llmforge-sft", "trl-sft")}, "ratio_vs_trl": ratio,
                         "timed_tokens": tokens, "examples": e["n_train"], "tokenize": trunc}
    print("start-up = process start to the first training step; end-to-end = to trained and saved (both on the "
          "run's active clock); peak RSS = the training process's ru_maxrss; tree mem = largest private memory "
          "(USS) of it and its children plus the shared pages of the largest, sampled every 0.5 s (llmforge DPO: "
          "Ray's processes and the reference actor too)" + ("" if args.sequential else
          "; runs took turns step by step, llmforge's idle Ray processes (a few % of a core) kept running during "
          "the other runs' turns"))
    return report


def _row(label: str, rate: float, r: dict) -> None:
    print(f"{label:<42}{rate:>10,.2f}{r['startup_s']:>8.1f} s{r['e2e_s']:>10.1f} s{r['rss_mib']:>6.0f} MiB"
          f"{r['tree_mib']:>6.0f} MiB{r['first_loss']:>10.5f}{r['last_loss']:>10.5f}")


def _median_ratio(slow: dict, fast: dict) -> float:
    """Median step time of `slow` / that of `fast`: the same batches, robust to a stray slow step."""
    import statistics

    return statistics.median(slow["step_s"]) / statistics.median(fast["step_s"])


if __name__ == "__main__":
    main()
