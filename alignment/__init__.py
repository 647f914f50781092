"""Post-training on the pretraining loop: SFT, reward model and DPO (`llmforge align ...`).

formats (data files -> records) · examples (tokenized on the driver) · losses (one module for
every loss) · sft / reward / dpo (the TrainTasks) · reference (DPO's cached reference
log-probs, a Ray Data pass) · job (the command) · synthetic (generated tasks with known rules).
PPO and GRPO on Ray actor groups come next.
"""
