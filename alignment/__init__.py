"""SFT, reward modelling, DPO/PPO/GRPO. Not built yet: a later issue."""
