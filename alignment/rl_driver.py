"""`llmforge align ppo|grpo`: a single-controller driver over Ray actor groups.

    driver (this process)                      actor groups (alignment.rl_workers), one placement group
      prompts -> rollout ------------------->  Rollout x rollout.actors   KV-cache sampling, one policy version
      completions -> reward, reference ----->  Reward, Reference           a reward model's scores; frozen
                                                                           log-probs (a reward *function* runs
                                                                           here in the driver, as veRL's rule
                                                                           rewards: no model, no round trip)
      (PPO) old log-probs, values ---------->  PolicyTrainer x N, CriticTrainer x N
      advantages (alignment/grpo.py: groups; alignment/ppo.py: KL-penalised rewards, GAE)
      updates ------------------------------>  PolicyTrainer x N (DeepSpeed), CriticTrainer x N
      weights of version v+1 --------------->  Rollout (every rollout batch records its version)

placement.hybrid (veRL's hybrid engine): no Rollout actors; each PolicyTrainer rank generates its
share with the weights it trains (ZeRO-3: a gathered copy refreshed once per version), so no
weights travel and no second process on the bundle competes for its cores.

Outputs in `<output>`: config.yaml, metrics.jsonl (one row per step: reward mean/std, KL, clip
fraction, entropy, response length, tokens/s, seconds spent generating / scoring / training /
syncing), rl.png, checkpoint_<step>/ (the policy in the llmforge checkpoint layout — `llmforge
train export|sample` and `--model` take `<output>` — plus critic/ for PPO and rl_state.json),
samples.jsonl (a few completions per step), results.json.

Resume: the same command continues from the newest checkpoint: its weights (and optimizer), the
prompt-stream position and the counters. Sampling needs no saved RNG state: every sample's seed
is a pure function of (data.seed, step, prompt id, sample index), so a resumed run draws what an
uninterrupted one would. A trainer rank that dies takes its group down: the driver restarts the
trainer groups from the newest checkpoint (up to run.max_failures times) and sends that
checkpoint's weights to the rollout actors before the next rollout. A rollout actor that dies
is replaced, given the current weights, and its share of the batch is generated again.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from llmforge.common.errors import ConfigError, UserError

# algorithm -> (its config class, its module: advantages and what the step needs; see alignment.grpo)
ALGORITHMS = {"grpo": ("alignment.rl_config:GRPOConfig", "alignment.grpo"),
              "ppo": ("alignment.rl_config:PPOConfig", "alignment.ppo")}
PROMPT_FIELDS = ("prompt", "context", "question", "instruction")
STATE_FILE = "rl_state.json"
CRITIC_DIR = "critic"
SAMPLES_PER_STEP = 4  # completions written to samples.jsonl per step
RESTART_COUNTERS = ("rollout_restarts", "trainer_restarts")  # kept through a restart from a checkpoint


def config_class(algorithm: str):
    import importlib

    if algorithm not in ALGORITHMS:
        raise UserError(f"unknown RL algorithm {algorithm!r} ({', '.join(ALGORITHMS)})")
    module, _, name = ALGORITHMS[algorithm][0].partition(":")
    return getattr(importlib.import_module(module), name)


# ------------------------------------------------------------------------------ prompts


@dataclass(frozen=True)
class Prompt:
    id: str
    prompt: Any  # a string or a message list, as in the file
    row: dict[str, Any]  # the whole row (answer, ...) for the reward function
    ids: list[int]  # the chat-template prompt ids generation continues


def read_prompts(cfg, chat, max_seq_len: int, log=print) -> tuple[list[Prompt], list[Prompt], dict[str, int]]:
    """(train, held out, counts). Prompts that leave no room for rollout.max_new_tokens are
    dropped and counted; an empty or all-too-long file is an error."""
    from alignment.formats import split_holdout
    from llmforge.common.rows import iter_rows
    from training.batch_generate import GenerateOptions, encode_prompt, fits

    options = GenerateOptions(system=cfg.data.system)
    prompts, counts = [], {"rows": 0, "prompt_too_long": 0}
    stem = Path(cfg.data.path).name
    for index, where, row in iter_rows(cfg.data.path):
        counts["rows"] += 1
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object with a 'prompt'")
        field = next((f for f in PROMPT_FIELDS if f in row), None)
        if field is None:
            raise UserError(f"{where}: no prompt field (one of {', '.join(PROMPT_FIELDS)}); it has {sorted(row)}")
        ids = encode_prompt(chat, row[field], options)
        if not fits(len(ids), cfg.rollout.max_new_tokens, max_seq_len):
            counts["prompt_too_long"] += 1
            continue
        prompts.append(Prompt(str(row.get("id", f"{stem}:{index}")), row[field], row, ids))
    if not prompts:
        why = (f"all {counts['rows']} prompts are longer than max_seq_len {max_seq_len} - rollout.max_new_tokens "
               f"{cfg.rollout.max_new_tokens}" if counts["rows"] else "it holds no prompts")
        raise UserError(f"--data {cfg.data.path}: {why}")
    if len({p.id for p in prompts}) != len(prompts):
        raise UserError(f"--data {cfg.data.path}: prompt ids repeat; give each row a unique 'id' or none")
    train, held = split_holdout(prompts, cfg.data.val_fraction, cfg.data.seed)
    if cfg.data.eval_path:
        data = cfg.data.model_copy(update={"path": cfg.data.eval_path, "eval_path": None, "val_fraction": 0.0})
        held, _, eval_counts = read_prompts(cfg.model_copy(update={"data": data}), chat, max_seq_len, log)
        counts["eval_prompt_too_long"] = eval_counts["prompt_too_long"]
    held = held[: cfg.data.max_val_prompts]
    counts.update(train=len(train), held_out=len(held))
    if counts["prompt_too_long"]:
        log(f"prompts: {counts['prompt_too_long']} of {counts['rows']} dropped: longer than max_seq_len "
            f"{max_seq_len} - rollout.max_new_tokens {cfg.rollout.max_new_tokens}")
    return train, held, counts


class PromptStream:
    """The prompts of RL step `s`: positions [s x P, (s + 1) x P) of an endless stream that
    visits every training prompt once per epoch in a seeded order."""

    def __init__(self, prompts: list[Prompt], per_step: int, seed: int):
        from training.data import GlobalOrder

        self.prompts, self.per_step, self.order = prompts, per_step, GlobalOrder(len(prompts), seed)

    def take(self, step: int) -> list[Prompt]:
        return [self.prompts[i] for i in self.order.windows(step * self.per_step, (step + 1) * self.per_step)]


# ------------------------------------------------------------------------------ batches


@dataclass
class Sample:
    prompt: Prompt
    index: int  # sample number within its prompt's group
    tokens: list[int]
    finish: str
    text: str = ""
    reward: float | None = None


def pack(samples: Sequence[Sample], pad_id: int) -> dict[str, np.ndarray]:
    """ids (B, L) prompt + completion right-padded, mask (B, L) 1 on the completion tokens."""
    width = max(len(s.prompt.ids) + len(s.tokens) for s in samples)
    ids = np.full((len(samples), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(samples), width), dtype=np.int64)
    for i, s in enumerate(samples):
        p = len(s.prompt.ids)
        ids[i, :p] = s.prompt.ids
        ids[i, p:p + len(s.tokens)] = s.tokens
        mask[i, p:p + len(s.tokens)] = 1
    return {"ids": ids, "mask": mask}


class Slots:
    """Sequences spread over `world` ranks x `accum` micro-batches of at most `micro` each
    (sorted by length so a micro-batch pads little; round-robin over ranks so they stay even)."""

    def __init__(self, lengths: Sequence[int], world: int, accum: int, micro: int):
        self.lengths = list(lengths)
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        if len(order) > world * accum * micro:
            raise ValueError(f"{len(order)} sequences do not fit {world} x {accum} x {micro}")
        self.slots = [[[] for _ in range(accum)] for _ in range(world)]
        for k in range(world * accum):
            rank, micro_index = k % world, k // world
            self.slots[rank][micro_index] = order[k * micro:(k + 1) * micro]

    def split(self, arrays: dict[str, np.ndarray]) -> list[list[dict[str, np.ndarray]]]:
        """Per rank, its micro-batches, each trimmed to its own longest sequence."""
        out = []
        for rank_slots in self.slots:
            batches = []
            for idx in rank_slots:
                if not idx:
                    batches.append({})
                    continue
                width = max(2, max(self.lengths[i] for i in idx))
                batches.append({k: (v[idx, :width] if k in ("ids", "mask") else v[idx, :width - 1])
                                for k, v in arrays.items()})
            out.append(batches)
        return out

    def gather(self, results: list[list[np.ndarray | None]], n: int, width: int) -> np.ndarray:
        """Per-token arrays from `split`'s micro-batches back into one (n, width) array."""
        out = np.zeros((n, width), dtype=np.float32)
        for rank_slots, rank_results in zip(self.slots, results):
            for idx, values in zip(rank_slots, rank_results):
                if idx:
                    out[idx, :values.shape[1]] = values
        return out


# ------------------------------------------------------------------------------ actor groups


class ActorGroups:
    """The actors and their placement group; (re)starts them and moves weights."""

    def __init__(self, algorithm: str, cfg, out: Path, log=print):
        import ray
        from ray.util.placement_group import placement_group

        from llmforge.common.ray_session import check_embedded_fit
        from training.trainer import _worker_env

        self.algorithm, self.cfg, self.out, self.log = algorithm, cfg, out, log
        self.world = cfg.scaling.num_workers
        self.env = _worker_env()
        # Ray sets CUDA_VISIBLE_DEVICES for an actor with a (fractional) GPU: its device is cuda:0
        self.device = "cuda" if cfg.scaling.use_gpu else "cpu"
        s, p = cfg.scaling, cfg.placement
        gpu = {"GPU": 1} if s.use_gpu else {}
        trainer_groups = ["policy"] + (["critic"] if algorithm == "ppo" else [])
        # bundle index -> the actors placed on it; actor -> (bundle, share of the bundle)
        if p.colocate:
            bundles = [{"CPU": s.cpus_per_worker, **gpu} for _ in range(self.world)]
            where = {f"{g}-{r}": r for g in trainer_groups for r in range(self.world)}
            if not p.hybrid:  # hybrid: the policy trainers generate
                where.update({f"rollout-{i}": i % self.world for i in range(cfg.rollout.actors)})
            where.update({"reference": 0, "reward": 0} if cfg.reward.model else {"reference": 0})
        else:
            bundles, where = [], {}
            for g in trainer_groups:
                for r in range(self.world):
                    where[f"{g}-{r}"] = len(bundles)
                    bundles.append({"CPU": s.cpus_per_worker, **gpu})
            for name in [f"rollout-{i}" for i in range(cfg.rollout.actors)] + ["reference"] + (
                    ["reward"] if cfg.reward.model else []):
                where[name] = len(bundles)
                bundles.append({"CPU": p.actor_cpus, **gpu})
        sharing = {b: sum(1 for v in where.values() if v == b) for b in range(len(bundles))}
        self.where = {name: (b, 1.0 / sharing[b]) for name, b in where.items()}
        self.bundles = bundles
        check_embedded_fit(bundles, "scaling.num_workers / cpus_per_worker, rollout.actors, placement.actor_cpus "
                                    "or use_gpu, or set placement.colocate")
        self.pg = placement_group(bundles, strategy=p.strategy)
        try:
            ray.get(self.pg.ready(), timeout=300)
        except Exception:
            raise UserError(f"the placement group {bundles} could not be placed on the cluster "
                            f"({ray.cluster_resources()}); lower scaling.num_workers / cpus_per_worker or "
                            f"rollout.actors, or set placement.colocate") from None
        self.trainers: dict[str, list] = {}
        self.rollout: list = []
        self.reference = self.reward = None

    def _options(self, name: str) -> dict[str, Any]:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle, share = self.where[name]
        resources = self.bundles[bundle]
        options = {"num_cpus": resources["CPU"] * share * 0.999, "num_gpus": resources.get("GPU", 0) * share * 0.999,
                   "scheduling_strategy": PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=bundle),
                   "max_restarts": 0}
        # Ray starts a fractional-CPU actor with OMP_NUM_THREADS=1; torch.set_num_threads then
        # grows a team OpenMP was not sized for, and every small op paid for it (a generate call
        # of the tiny model: 36 ms, 27 ms with the variable matching the threads, in an actor).
        options["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": str(self.threads(name))}}
        return options

    def threads(self, name: str) -> int:
        if self.cfg.train.threads:
            return self.cfg.train.threads
        return max(1, int(self.bundles[self.where[name][0]]["CPU"]))  # colocated actors take turns

    def start_trainers(self, resume: Path | None) -> None:
        import ray

        from alignment.rl_workers import CriticTrainer, PolicyTrainer

        config = self.cfg.model_dump(mode="json")
        for group, cls in (("policy", PolicyTrainer), ("critic", CriticTrainer)):
            if group == "critic" and self.algorithm != "ppo":
                continue
            remote = ray.remote(cls)
            workers = [remote.options(**self._options(f"{group}-{r}")).remote(
                self.algorithm, config, r, self.world, self.threads(f"{group}-{r}"), self.env)
                for r in range(self.world)]
            addr, port = ray.get(workers[0].address.remote())
            where = None
            if resume is not None:
                where = str(resume / CRITIC_DIR) if group == "critic" else str(resume)
            ready = ray.get([w.setup.remote(addr, port, where) for w in workers])
            self.log(f"{group}: {ready[0]}")
            self.trainers[group] = workers

    def stop_trainers(self) -> None:
        import ray

        for workers in self.trainers.values():
            for w in workers:
                ray.kill(w, no_restart=True)
        self.trainers = {}

    def start_rollout(self, i: int):
        import ray

        from alignment.rl_workers import Rollout

        actor = ray.remote(Rollout).options(**self._options(f"rollout-{i}")).remote(
            self.cfg.model, self.threads(f"rollout-{i}"), self.device)
        if i < len(self.rollout):
            self.rollout[i] = actor
        else:
            self.rollout.append(actor)
        return actor

    def start_helpers(self) -> None:
        import ray

        from alignment.rl_workers import Reference, Reward

        for i in range(0 if self.cfg.placement.hybrid else self.cfg.rollout.actors):
            self.start_rollout(i)
        if self.cfg.kl_coef > 0:
            self.reference = ray.remote(Reference).options(**self._options("reference")).remote(
                self.cfg.model, self.threads("reference"), self.cfg.rollout.temperature, self.device)
        if self.cfg.reward.model:  # a reward function runs in the driver: no model, no round trip
            self.reward = ray.remote(Reward).options(**self._options("reward")).remote(
                None, self.cfg.reward.model, self.threads("reward"), self.device)

    def export_weights(self) -> list:
        """Object refs of every policy rank's `weights()`: rank 0's holds the full weights (every
        rank takes part: ZeRO-3 gathers), the others None."""
        return [w.weights.remote() for w in self.trainers["policy"]]

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in [*(w for ws in self.trainers.values() for w in ws), *self.rollout, self.reference, self.reward]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        remove_placement_group(self.pg)


# ------------------------------------------------------------------------------ the driver


class RLRun:
    def __init__(self, algorithm: str, cfg, log=print,
                 hooks: Sequence[Callable[[str, int, "RLRun"], None]] = ()):
        from training.chat import ChatTokenizer
        from training.sources import resolve_model
        from training.trainer import run_dir

        import importlib

        self.algorithm, self.cfg, self.log, self.hooks = algorithm, cfg, log, hooks
        self.algo = importlib.import_module(ALGORITHMS[algorithm][1])
        self.out = run_dir(cfg)
        self.policy = resolve_model(cfg.model)
        if self.policy.kind != "causal_lm":
            raise ConfigError(f"--model {cfg.model} is a {self.policy.kind} model; {algorithm} trains a causal LM")
        if self.policy.tokenizer_path is None:
            raise ConfigError(f"--model {cfg.model} has no tokenizer.json next to its weights")
        self.chat = ChatTokenizer.from_file(str(self.policy.tokenizer_path))
        self._check_reward_model()
        self.reward_function = None
        if cfg.reward.function:  # imported now: a bad MODULE:FUNCTION fails before any actor starts
            from alignment.rewards import RewardScorer

            self.reward_function = RewardScorer(function=cfg.reward.function)
        if algorithm == "ppo" and cfg.critic:
            self._check_same_tokenizer(cfg.critic, "critic")
        self.train_prompts, self.val_prompts, self.prompt_counts = read_prompts(
            cfg, self.chat, self.policy.config.max_seq_len, log)
        self.stream = PromptStream(self.train_prompts, cfg.train.prompts_per_step, cfg.data.seed)
        self.counters = {"samples": 0, "reward_errors": 0, "constant_groups": 0, "groups": 0,
                         "rollout_restarts": 0, "trainer_restarts": 0, "skipped_updates": 0}
        self.first_error: str | None = None
        self.version = 0
        self.weights_ref = None

    def _check_same_tokenizer(self, path: str, what: str):
        from llmforge.common.resume import file_digest
        from training.sources import resolve_model

        other = resolve_model(path)
        mine = file_digest(self.policy.tokenizer_path)
        theirs = file_digest(other.tokenizer_path) if other.tokenizer_path else None
        if theirs != mine:
            raise ConfigError(f"{what} {other.path} has tokenizer sha256 {theirs}, the policy's is {mine}: it would "
                              f"read other token ids; train it on the policy's tokenizer")
        return other

    def _check_reward_model(self) -> None:
        if not self.cfg.reward.model:
            return
        rm = self._check_same_tokenizer(self.cfg.reward.model, "reward.model (--reward-model)")
        if rm.kind != "reward":
            raise ConfigError(f"--reward-model {rm.path} is a {rm.kind} model, not a reward model")

    # -------------------------------------------------------------- checkpoints

    def latest_checkpoint(self) -> Path | None:
        found = sorted(p for p in self.out.glob("checkpoint_[0-9]*") if (p / STATE_FILE).exists())
        return found[-1] if found else None

    def save_checkpoint(self, step: int) -> Path:
        import ray

        final = self.out / f"checkpoint_{step:08d}"
        tmp = self.out / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        meta = {"step": step, "samples_seen": step * self.cfg.rollout_sequences, "global_batch":
                self.cfg.rollout_sequences, "world_size": self.groups.world, "zero_stage": self.cfg.train.zero_stage,
                "model": self.policy.config.model_dump(), "task": self.algorithm, "model_kind": "causal_lm",
                "tokenizer": str(self.policy.tokenizer_path), "start": str(self.cfg.model), "lora": None}
        calls = [w.save.remote(str(tmp), meta) for w in self.groups.trainers["policy"]]
        if "critic" in self.groups.trainers:
            critic_meta = {**meta, "model_kind": "reward", "task": f"{self.algorithm}-critic"}
            calls += [w.save.remote(str(tmp / CRITIC_DIR), critic_meta) for w in self.groups.trainers["critic"]]
        ray.get(calls)
        state = {"step": step, "version": self.version, "prompts_consumed": step * self.cfg.train.prompts_per_step,
                 "seed": self.cfg.data.seed, "counters": self.counters, "first_error": self.first_error}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        keep = self.cfg.run.num_to_keep
        if keep:
            done = sorted(p for p in self.out.glob("checkpoint_[0-9]*") if (p / STATE_FILE).exists())
            for old in done[:-keep]:
                shutil.rmtree(old)
        return final

    def resume_point(self) -> tuple[int, Path | None]:
        ckpt = self.latest_checkpoint()
        if ckpt is None:
            return 0, None
        state = json.loads((ckpt / STATE_FILE).read_text())
        self.counters.update(state["counters"])
        self.first_error = state.get("first_error")
        return int(state["step"]), ckpt

    # -------------------------------------------------------------- weights

    def sync_weights(self, version: int) -> float:
        """Send the policy's weights of `version` to every rollout actor (hybrid: tell the trainers
        that their weights are `version`); seconds it took."""
        import ray

        start = time.perf_counter()
        if self.cfg.placement.hybrid:
            ray.get([w.set_version.remote(version) for w in self.groups.trainers["policy"]])
            self.version = version
            return time.perf_counter() - start
        refs = self.groups.export_weights()
        ray.get(refs[1:])  # the other ranks' part of a ZeRO-3 gather (a dead trainer raises here)
        self.install_weights(refs[0], version,
                             [a.set_weights.remote(refs[0], version) for a in self.groups.rollout])
        return time.perf_counter() - start

    def install_weights(self, weights_ref, version: int, pending: list) -> None:
        """Wait for the rollout actors' `set_weights` calls (`pending`, one per actor); one that
        died meanwhile is replaced and given the weights. Then `version` is current."""
        import ray
        from ray.exceptions import RayActorError

        for i, ref in enumerate(pending):
            try:
                ray.get(ref)
            except RayActorError:
                self.counters["rollout_restarts"] += 1
                self.log(f"rollout actor {i} died taking weights of version {version}; restarting it")
                ray.get(self.groups.start_rollout(i).set_weights.remote(weights_ref, version))
        self.weights_ref, self.version = weights_ref, version

    # -------------------------------------------------------------- rollout

    def _sampling(self, temperature: float | None = None) -> dict[str, Any]:
        r = self.cfg.rollout
        return {"max_new_tokens": r.max_new_tokens, "temperature": r.temperature if temperature is None else temperature,
                "top_p": r.top_p, "top_k": r.top_k, "stop_token_ids": [self.chat.end_id]}

    def generate(self, prompts: list[Prompt], seeds: list[int], temperature: float | None = None) -> list[dict]:
        """Completions for `prompts` over the rollout actors, all made by policy version
        `self.version`; a rollout actor that dies is replaced and its share redone. Hybrid: over
        the policy trainer ranks (each is called, so ZeRO-3's collectives line up); one that dies
        raises, and the trainer groups restart from the last checkpoint."""
        import ray
        from ray.exceptions import RayActorError

        hybrid = self.cfg.placement.hybrid
        actors = self.groups.trainers["policy"] if hybrid else self.groups.rollout
        chunks = np.array_split(np.arange(len(prompts)), len(actors))
        sampling = self._sampling(temperature)

        def call(i):
            idx = chunks[i]
            return actors[i].generate.remote([prompts[j].ids for j in idx], [seeds[j] for j in idx], sampling,
                                             self.chat.pad_id, self.cfg.rollout.batch_size)

        pending = {i: call(i) for i in range(len(actors)) if len(chunks[i]) or hybrid}
        results: dict[int, dict] = {}
        while pending:
            for i, ref in list(pending.items()):
                try:
                    results[i] = ray.get(ref)
                    del pending[i]
                except RayActorError:
                    if hybrid or self.counters["rollout_restarts"] >= 10 * max(1, self.cfg.run.max_failures):
                        raise
                    self.counters["rollout_restarts"] += 1
                    self.log(f"step {self.step + 1}: rollout actor {i} died; restarting it with policy version "
                             f"{self.version} and generating its {len(chunks[i])} prompts again")
                    actor = self.groups.start_rollout(i)
                    if self.weights_ref is not None:
                        ray.get(actor.set_weights.remote(self.weights_ref, self.version))
                    pending[i] = call(i)
        out: list[dict] = [None] * len(prompts)
        self.last_actor_seconds = max((res["seconds"] for res in results.values()), default=0.0)
        for i, res in results.items():
            if res["version"] != self.version:  # never train on samples of another policy
                raise RuntimeError(f"rollout actor {i} generated with policy version {res['version']}, the "
                                   f"trainer is at version {self.version}")
            for j, tokens, finish in zip(chunks[i], res["tokens"], res["finish"]):
                out[j] = {"tokens": tokens, "finish": finish}
        return out

    def seeds(self, step: int, prompts: list[Prompt], k: int) -> list[int]:
        from training.batch_generate import row_seed

        return [row_seed(self.cfg.data.seed, f"{step}:{p.id}:{i}") for p in prompts for i in range(k)]

    # -------------------------------------------------------------- scoring

    def score_rewards(self, samples: list[Sample]) -> None:
        scored = self._score([s.prompt for s in samples], [s.text for s in samples])
        for s, r in zip(samples, scored.rewards):
            s.reward = r
        errors = sum(scored.errors.values())
        self.counters["samples"] += len(samples)
        self.counters["reward_errors"] += errors
        self.first_error = self.first_error or scored.first_error
        rate = self.counters["reward_errors"] / max(1, self.counters["samples"])
        if errors and rate > self.cfg.reward.max_error_rate:
            raise UserError(f"reward function {self.cfg.reward.function}: {self.counters['reward_errors']} of "
                            f"{self.counters['samples']} samples could not be scored ({rate:.1%} > "
                            f"reward.max_error_rate {self.cfg.reward.max_error_rate:.1%}); first error: "
                            f"{self.first_error}")

    def trainer_scores(self, group: str, slots: Slots, arrays: dict[str, np.ndarray]) -> np.ndarray:
        import ray

        parts = slots.split(arrays)
        results = ray.get([w.score.remote(p) for w, p in zip(self.groups.trainers[group], parts)])
        return slots.gather(results, len(arrays["ids"]), arrays["ids"].shape[1] - 1)

    def update(self, group: str, slots: Slots, arrays: dict[str, np.ndarray], denominator: float,
               export: bool = False, version: int | None = None) -> tuple[list, list]:
        """Refs of every rank's update metrics, and (export) of its weights afterwards; `version`:
        the trainers take the updated weights as that policy version (hybrid generation)."""
        parts = slots.split(arrays)
        workers = self.groups.trainers[group]
        if not export:
            return [w.update.remote(p, denominator, version) for w, p in zip(workers, parts)], []
        pairs = [w.update_and_export.options(num_returns=2).remote(p, denominator) for w, p in zip(workers, parts)]
        return [m for m, _ in pairs], [w for _, w in pairs]

    # -------------------------------------------------------------- one step

    def rollout_step(self, step: int) -> tuple[list[Sample], float, int]:
        cfg = self.cfg
        prompts = self.stream.take(step)
        k = cfg.samples_per_prompt
        expanded = [p for p in prompts for _ in range(k)]
        for hook in self.hooks:
            hook("before_generate", step, self)
        start = time.perf_counter()
        outs = self.generate(expanded, self.seeds(step, prompts, k))
        seconds = time.perf_counter() - start
        samples = [Sample(p, i % k, o["tokens"], o["finish"], self.chat.decode(o["tokens"]))
                   for i, (p, o) in enumerate(zip(expanded, outs))]
        return samples, seconds, sum(len(s.tokens) for s in samples)

    def train_step(self, step: int) -> dict[str, Any]:
        import ray
        import torch

        from alignment.pg_losses import aggregate, kl_estimate

        cfg, algo = self.cfg, self.algo
        samples, t_gen, generated = self.rollout_step(step)
        t_gen_actors = self.last_actor_seconds
        t0 = time.perf_counter()
        self.score_rewards(samples)
        rewards = torch.tensor([np.nan if s.reward is None else s.reward for s in samples], dtype=torch.float64)
        keep, adv, row, counters = algo.select(rewards, cfg)
        for key, value in counters.items():
            self.counters[key] += value
        valid = rewards[~torch.isnan(rewards)]
        row.update(reward_mean=float(valid.mean()) if len(valid) else float("nan"),
                   reward_std=float(valid.std()) if len(valid) > 1 else 0.0,
                   response_length=float(np.mean([len(s.tokens) for s in samples])),
                   stop_fraction=float(np.mean([s.finish == "stop" for s in samples])),
                   sequences_trained=len(keep))
        self._write_samples(step, samples)
        if not keep:
            self.counters["skipped_updates"] += 1
            row.update(time_generation=t_gen, time_scoring=time.perf_counter() - t0, time_training=0.0,
                       time_sync=0.0, tokens_per_s=generated / max(t_gen, 1e-9))
            return row
        kept = [samples[i] for i in keep]
        arrays = pack(kept, self.chat.pad_id)
        m = arrays["mask"][:, 1:].astype(np.float32)
        slots = Slots([len(s.prompt.ids) + len(s.tokens) for s in kept], self.groups.world,
                      cfg.accumulation(self.groups.world), cfg.train.micro_batch_size)
        ref = self.groups.reference.score.remote(arrays) if self.groups.reference is not None else None
        if algo.needs_old_logp(cfg):
            arrays["old_logp"] = self.trainer_scores("policy", slots, arrays)
        values = self.trainer_scores("critic", slots, arrays) if algo.needs_values else None
        if ref is not None:
            arrays["ref_logp"] = ray.get(ref).astype(np.float32)
            base = torch.from_numpy(arrays.get("old_logp", arrays["ref_logp"]))
            kl = kl_estimate(base, torch.from_numpy(arrays["ref_logp"]), "k1") * torch.from_numpy(m)
            row["kl"] = float(kl.sum(1).mean())  # per sequence, summed over its tokens (TRL's objective/kl)
        scores = torch.tensor([s.reward for s in kept], dtype=torch.float32)
        row.update(algo.advantages(adv, keep, scores, arrays, m, cfg, values))
        t_score = time.perf_counter() - t0
        for hook in self.hooks:
            hook("before_update", step, self)
        t1 = time.perf_counter()
        mask_t = torch.from_numpy(m)
        mode = algo.aggregation(cfg)
        denominator = float(aggregate(torch.zeros_like(mask_t), mask_t, mode, cfg.rollout.max_new_tokens)[1])
        sums: dict[str, float] = {}
        set_refs: list = []
        hybrid = cfg.placement.hybrid
        for epoch in range(cfg.train.update_epochs):
            last = epoch == cfg.train.update_epochs - 1
            refs, weight_refs = self.update("policy", slots, arrays, denominator, export=last and not hybrid,
                                            version=self.version + 1 if last and hybrid else None)
            if last and not hybrid:  # the new weights go on to the rollout actors straight from the object store
                set_refs = [a.set_weights.remote(weight_refs[0], self.version + 1) for a in self.groups.rollout]
            if algo.needs_values:
                refs += self.update("critic", slots, arrays, float(m.sum()))[0]
            parts = ray.get(refs)
            grad_norm = parts[0].pop("grad_norm")  # rank 0 of the policy: the global norm
            for part in parts:
                part.pop("grad_norm", None)
                for key, value in part.items():
                    sums[key] = sums.get(key, 0.0) + value
        t_train = time.perf_counter() - t1
        tokens = max(sums.get("tokens", 1.0), 1.0)
        row.update(loss=sums.get("policy_loss", 0.0) / tokens, clip_fraction=sums.get("clipped", 0.0) / tokens,
                   entropy=sums.get("entropy", 0.0) / tokens, grad_norm=grad_norm)
        if "kl_loss" in sums:
            row["kl_loss"] = sums["kl_loss"] / tokens
        if "value_loss" in sums:
            value_tokens = max(sums.get("value_tokens", 1.0), 1.0)
            row["value_loss"] = sums["value_loss"] / value_tokens
            row["value_clip_fraction"] = sums["value_clipped"] / value_tokens
        t2 = time.perf_counter()
        if hybrid:
            self.version += 1  # the trainers took it with the update: nothing travels
        else:
            ray.get(weight_refs[1:])
            self.install_weights(weight_refs[0], self.version + 1, set_refs)
        t_sync = time.perf_counter() - t2  # what the weight transfer adds after the update
        row.update(time_generation=t_gen, time_generation_in_actors=t_gen_actors, time_scoring=t_score,
                   time_training=t_train, time_sync=t_sync,
                   tokens_per_s=generated / max(t_gen, 1e-9))
        return row

    def _write_samples(self, step: int, samples: list[Sample]) -> None:
        with (self.out / "samples.jsonl").open("a") as f:
            for s in samples[: SAMPLES_PER_STEP * self.cfg.samples_per_prompt: self.cfg.samples_per_prompt]:
                f.write(json.dumps({"step": step + 1, "prompt": s.prompt.prompt, "completion": s.text,
                                    "reward": s.reward}) + "\n")

    # -------------------------------------------------------------- evaluation

    def evaluate(self) -> dict[str, float]:
        """The held-out prompts, greedy (`eval_reward`, `eval_exact_match` for `math`) and
        `data.eval_samples` draws at the rollout temperature (`eval_sampled_*`: what the policy
        does when sampling, the distribution RL sharpens). The draws' seeds depend on the prompt
        and draw only, so evaluations at different steps compare like with like."""
        from alignment.rewards import exact_match
        from training.batch_generate import row_seed

        if not self.val_prompts:
            return {}
        result: dict[str, float] = {"eval_prompts": len(self.val_prompts)}
        k = self.cfg.data.eval_samples
        runs = [("eval", self.val_prompts, [0] * len(self.val_prompts), 0.0)]
        if k:
            prompts = [p for p in self.val_prompts for _ in range(k)]
            seeds = [row_seed(self.cfg.data.seed, f"eval:{p.id}:{i}") for p in self.val_prompts for i in range(k)]
            runs.append(("eval_sampled", prompts, seeds, None))
        for name, prompts, seeds, temperature in runs:
            texts = [self.chat.decode(o["tokens"]) for o in self.generate(prompts, seeds, temperature)]
            scored = self._score(prompts, texts)
            got = [r for r in scored.rewards if r is not None]
            result[f"{name}_reward"] = float(np.mean(got)) if got else float("nan")
            if self.cfg.reward.function == "math":
                result[f"{name}_exact_match"] = float(np.mean([exact_match(t, p.row) for t, p in zip(texts, prompts)]))
        return result

    def _score(self, prompts: list[Prompt], texts: list[str]):
        args = ([p.prompt for p in prompts], texts, [p.row for p in prompts], self.cfg.reward.batch_size)
        if self.reward_function is not None:
            return self.reward_function.score(*args)
        import ray

        return ray.get(self.groups.reward.score.remote(*args))

    # -------------------------------------------------------------- the loop

    def run(self) -> dict[str, Any]:
        import yaml

        from llmforge.common.ray_session import init_ray
        from training.loop import MetricsLog

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        init_ray()
        world = cfg.scaling.num_workers
        self.log(f"{self.algorithm}: {len(self.train_prompts)} prompts ({len(self.val_prompts)} held out), "
                 f"{cfg.train.max_steps} steps of {cfg.train.prompts_per_step} prompts x {cfg.samples_per_prompt} "
                 f"samples; {world} trainer worker(s), "
                 f"{'generating (hybrid)' if cfg.placement.hybrid else f'{cfg.rollout.actors} rollout actor(s)'}, "
                 f"{'colocated' if cfg.placement.colocate else 'spread'} -> {self.out}")
        metric_names = ("reward_mean", "reward_std", "kl", "clip_fraction", "entropy", "response_length",
                        "time_generation", "time_scoring", "time_training", "time_sync", "eval_reward")
        metrics = MetricsLog(str(self.out / "metrics.jsonl"), 0, under_ray=True, extra=metric_names)
        self.step, resume = self.resume_point()
        self.groups = ActorGroups(self.algorithm, cfg, self.out, self.log)
        initial = None
        try:
            self.groups.start_helpers()
            self.groups.start_trainers(resume)
            self.sync_weights(self.step)
            if resume is not None:
                self.log(f"resumed from step {self.step} ({resume})")
            elif self.val_prompts:
                initial = self.evaluate()
                metrics.write({"step": 0, **initial, "time": time.time()})
                self.log(f"step 0: {_fmt(initial)}")
            self._loop(metrics)
        finally:
            self.groups.shutdown()
        return self._results(initial)

    def _loop(self, metrics) -> None:
        from ray.exceptions import RayActorError

        cfg = self.cfg
        failures = 0
        while self.step < cfg.train.max_steps:
            try:
                start = time.perf_counter()
                row = self.train_step(self.step)
            except RayActorError as err:
                failures += 1
                if failures > cfg.run.max_failures >= 0:
                    raise UserError(f"a trainer actor died {failures} times (run.max_failures "
                                    f"{cfg.run.max_failures}); last: {err}") from None
                restarts = {k: self.counters[k] for k in RESTART_COUNTERS}
                restarts["trainer_restarts"] += 1
                self.step, resume = self.resume_point()  # the counters as they were at that checkpoint,
                self.counters.update(restarts)  # but for the restarts: they count this run's faults, not steps
                self.log(f"a trainer actor died ({type(err).__name__}); restarting the trainer group(s) from "
                         f"{resume or 'the starting weights'} (step {self.step})")
                self.groups.stop_trainers()
                self.groups.start_trainers(resume)
                self.sync_weights(self.step)
                continue
            self.step += 1
            row.update(step=self.step, policy_version=self.version, step_seconds=time.perf_counter() - start,
                       time=time.time(), **{k: v for k, v in self.counters.items() if k != "samples"})
            if not math.isfinite(row.get("loss", 0.0)):
                raise UserError(f"{self.algorithm}: non-finite loss at step {self.step}; stopped, the last checkpoint "
                                f"is kept (lower optim.lr)")
            if (cfg.train.eval_every and self.step % cfg.train.eval_every == 0) or self.step == cfg.train.max_steps:
                row.update(self.evaluate())
            metrics.write(row)
            if self.step % cfg.train.log_every == 0 or self.step == cfg.train.max_steps:
                self.log(f"step {self.step}/{cfg.train.max_steps} {_fmt(row)}")
            if self.step == cfg.train.max_steps or (cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0):
                self.save_checkpoint(self.step)

    def _results(self, initial) -> dict[str, Any]:
        from training.trainer import read_metrics

        rows = [r for r in read_metrics(self.out / "metrics.jsonl") if "reward_mean" in r]
        final = {k: v for k, v in rows[-1].items() if k.startswith("eval_")} if rows else {}
        plot = plot_rl(self.out / "metrics.jsonl", self.out / "rl.png")
        results = {"algorithm": self.algorithm, "model": str(self.policy.path), "output": str(self.out),
                   "steps": self.step, "prompts": self.prompt_counts, "counters": self.counters,
                   "first_reward_error": self.first_error, "initial_eval": initial, "final_eval": final,
                   "final": {k: v for k, v in (rows[-1] if rows else {}).items() if isinstance(v, (int, float))},
                   "plot": str(plot) if plot else None}
        if initial is None:  # resumed: the step-0 evaluation is in metrics.jsonl
            first = next((r for r in read_metrics(self.out / "metrics.jsonl") if r["step"] == 0), None)
            results["initial_eval"] = {k: v for k, v in first.items() if k.startswith("eval_")} if first else None
        (self.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        self.log(f"{self.algorithm}: done; results {self.out / 'results.json'}")
        return results


def _fmt(row: dict[str, Any]) -> str:
    keys = ("reward_mean", "kl", "clip_fraction", "entropy", "response_length", "loss", "value_loss",
            "eval_reward", "eval_exact_match", "eval_sampled_reward", "eval_sampled_exact_match", "tokens_per_s", "time_generation", "time_training", "time_sync")
    return " ".join(f"{k} {row[k]:.4g}" for k in keys if isinstance(row.get(k), (int, float)))


def plot_rl(metrics_path: Path, out: Path) -> Path | None:
    from training.trainer import read_metrics

    rows = [r for r in read_metrics(metrics_path) if "reward_mean" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("reward_mean", "reward (rollouts)"), ("kl", "KL to reference (per sequence)"),
              ("response_length", "response tokens"), ("entropy", "entropy (nats/token)")]
    panels = [p for p in panels if any(p[0] in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    evals = [r for r in read_metrics(metrics_path) if "eval_reward" in r]
    for ax, (key, label) in zip(axes[0], panels):
        ax.plot([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r], label=key)
        if key == "reward_mean" and evals:
            ax.plot([r["step"] for r in evals], [r["eval_reward"] for r in evals], "o-", label="held-out (greedy)")
        ax.set_xlabel("RL step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run_rl(algorithm: str, cfg, log=print, hooks=()) -> dict[str, Any]:
    """Run (or resume) one PPO / GRPO job to its last step; returns results.json's content."""
    return RLRun(algorithm, cfg, log, hooks).run()
