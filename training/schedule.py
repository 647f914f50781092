"""Learning-rate schedules as a multiplier of the peak lr at each optimizer step."""
from __future__ import annotations

import math

from training.config import OptimConfig


def lr_factor(step: int, max_steps: int, optim: OptimConfig) -> float:
    """lr(step) / optim.lr. Linear warmup from lr/warmup to lr, then:
    cosine to min_lr at max_steps; wsd: flat, then linear to min_lr over the last
    decay_fraction of the steps (MiniCPM's warmup-stable-decay); constant: flat."""
    floor = optim.min_lr_ratio
    if optim.warmup_steps and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    if optim.schedule == "cosine":
        span = max(1, max_steps - optim.warmup_steps)
        progress = min(1.0, (step - optim.warmup_steps) / span)
        return floor + 0.5 * (1.0 - floor) * (1.0 + math.cos(math.pi * progress))
    decay_start = max(optim.warmup_steps, int(round(max_steps * (1.0 - optim.decay_fraction))))
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, max_steps - decay_start))
    return 1.0 - (1.0 - floor) * progress
