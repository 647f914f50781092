"""Configs of `llmforge align ppo|grpo`: the training job's optimizer, workers and run
(`training.config.TrainJobConfig`), plus prompts, rollout sampling, rewards, actor placement
and each algorithm's knobs.

One RL step = sample `prompts_per_step` prompts (x `group_size` samples for GRPO) on the rollout
actors, score them, compute advantages, then `update_epochs` optimizer steps of the policy (and
the critic) over the whole rollout batch, accumulated in micro-batches of
`train.micro_batch_size` sequences per worker; then the new weights go to the rollout actors.
The defaults are TRL's (PPO) and DeepSeekMath/TRL's (GRPO) where they exist, scaled to a CPU.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from llmforge.common.config import StrictModel
from training.config import LoopConfig, OptimConfig, TrainJobConfig


class PromptData(StrictModel):
    path: str = Field(description="prompts, one JSON object per line: 'prompt' (a string or a message list), "
                      "or 'context' / 'question' / 'instruction'; other fields (e.g. 'answer') go to the reward")
    val_fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description="prompts held out (by id hash) for "
                                "the evaluation at eval_every / the end")
    eval_path: str | None = Field(default=None, description="prompts to evaluate on instead of a held-out split "
                                  "(e.g. a benchmark's test set, or the training prompts themselves)")
    max_val_prompts: int = Field(default=256, gt=0)
    eval_samples: int = Field(default=4, ge=0, description="draws per held-out prompt at the rollout temperature "
                              "in each evaluation (besides the greedy one)")
    system: str | None = Field(default=None, description="system turn before each plain-string prompt")
    seed: int = Field(default=0, description="order of the prompts over epochs, and the sampling seeds")


class RolloutOptions(StrictModel):
    max_new_tokens: int = Field(default=32, gt=0)
    temperature: float = Field(default=1.0, gt=0.0, description="the policy's log-probs in the loss use the same")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, gt=0)
    actors: int = Field(default=1, gt=0, description="rollout actors (generation engines)")
    batch_size: int = Field(default=64, gt=0, description="sequences per generate call of one actor")


class RewardOptions(StrictModel):
    function: str | None = Field(default=None, description="'math' or MODULE:FUNCTION(completion, row) -> float")
    model: str | None = Field(default=None, description="a reward model (llmforge run/checkpoint or HF directory)")
    max_error_rate: float = Field(default=0.1, ge=0.0, le=1.0, description="share of samples whose reward "
                                  "function raised or returned NaN/inf (dropped) above which the run stops")
    batch_size: int = Field(default=32, gt=0, description="sequences per reward-model forward")


class Placement(StrictModel):
    """Where the actor groups run. colocate: the policy trainers, critic trainers, rollout,
    reference and reward actors share `scaling.num_workers` bundles of `scaling.cpus_per_worker`
    CPUs (and `scaling.use_gpu` GPUs) and take turns (the small-cluster default, as OpenRLHF's
    --colocate_all_models); spread: every group gets bundles of its own."""

    colocate: bool = True
    hybrid: bool = Field(default=False, description="the policy trainer ranks generate the rollouts themselves "
                         "(veRL's hybrid engine): no rollout actors, no weight transfer; needs colocate")
    actor_cpus: float = Field(default=1.0, gt=0, description="spread: CPUs per rollout/reference/reward actor")
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"


class RLLoop(LoopConfig):
    max_steps: int = Field(default=50, gt=0, description="RL steps (rollout + update rounds)")
    prompts_per_step: int = Field(default=8, gt=0)
    update_epochs: int = Field(default=1, gt=0, description="optimizer steps over each rollout batch (PPO's "
                               "num_ppo_epochs, GRPO's mu)")
    micro_batch_size: int = Field(default=8, gt=0, description="sequences per worker per forward")
    zero_stage: Literal[0, 1, 2, 3] = 0
    log_every: int = Field(default=1, gt=0)
    eval_every: int = Field(default=0, ge=0, description="greedy evaluation on the held-out prompts; 0 = at the end")
    checkpoint_every: int = Field(default=10, ge=0, description="0 = only at the end")


class RLOptim(OptimConfig):
    lr: float = Field(default=1e-5, gt=0)
    schedule: Literal["cosine", "wsd", "constant"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0.0)


class RLConfig(TrainJobConfig):
    model: str = Field(description="the starting policy: an llmforge checkpoint or run directory, or a Hugging "
                       "Face Llama directory (usually an SFT model)")
    data: PromptData
    rollout: RolloutOptions = Field(default_factory=RolloutOptions)
    reward: RewardOptions = Field(default_factory=RewardOptions)
    placement: Placement = Field(default_factory=Placement)
    kl_coef: float = Field(default=0.0, ge=0.0)
    kl_estimator: Literal["k1", "k3"] = "k3"
    optim: RLOptim = Field(default_factory=RLOptim)
    train: RLLoop = Field(default_factory=RLLoop)
    @model_validator(mode="after")
    def _checks(self):
        if (self.reward.function is None) == (self.reward.model is None):
            raise ValueError("reward: set exactly one of reward.function (--reward math|MODULE:FUNCTION) and "
                             "reward.model (--reward-model PATH)")
        if self.placement.hybrid and not self.placement.colocate:
            raise ValueError("placement.hybrid: the trainers generate on their own bundles; it needs "
                             "placement.colocate true")
        if self.train.global_batch_size is not None:
            raise ValueError("train.global_batch_size: an RL step's batch is train.prompts_per_step x the samples "
                             "per prompt; leave it unset")
        self._check_loop()
        return self

    @property
    def samples_per_prompt(self) -> int:
        return 1

    @property
    def rollout_sequences(self) -> int:
        return self.train.prompts_per_step * self.samples_per_prompt

    def accumulation(self, world: int) -> int:
        """Micro-batches per worker per optimizer step (the last ones may hold fewer sequences)."""
        return max(1, math.ceil(self.rollout_sequences / (self.train.micro_batch_size * world)))


class GRPOConfig(RLConfig):
    group_size: int = Field(default=8, ge=2, description="samples per prompt (G)")
    advantage_scale: Literal["std", "none"] = Field(default="std", description="std: (r - mean) / (std + eps) per "
                                                    "group; none: r - mean (Dr. GRPO)")
    eps_low: float = Field(default=0.2, gt=0.0, lt=1.0)
    eps_high: float = Field(default=0.2, gt=0.0, description="DAPO's clip-higher uses 0.28")
    loss_aggregation: Literal["token-mean", "seq-mean-token-mean", "dr-grpo"] = "token-mean"
    filter_constant_groups: bool = Field(default=True, description="drop groups whose rewards are all equal "
                                         "(no signal), counted")

    @property
    def samples_per_prompt(self) -> int:
        return self.group_size


class PPOConfig(RLConfig):
    kl_coef: float = Field(default=0.05, ge=0.0, description="per-token KL penalty in the reward")
    kl_estimator: Literal["k1", "k3"] = "k1"
    gamma: float = Field(default=1.0, ge=0.0, le=1.0)
    lam: float = Field(default=0.95, ge=0.0, le=1.0)
    cliprange: float = Field(default=0.2, gt=0.0)
    cliprange_value: float = Field(default=0.2, gt=0.0)
    vf_coef: float = Field(default=0.1, gt=0.0, description="value loss scale (the critic's own optimizer)")
    whiten_advantages: bool = True
    critic: str | None = Field(default=None, description="the critic's starting weights; None = the reward model "
                               "(reward.model), else a fresh head on the policy's trunk")
    critic_lr: float | None = Field(default=None, gt=0, description="None = optim.lr")
    train: RLLoop = Field(default_factory=lambda: RLLoop(update_epochs=4))
