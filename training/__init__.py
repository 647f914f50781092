"""Pretraining on token shards: the Llama-style model, packed shard windows with a global
sample order, the DeepSpeed loop (standalone or under Ray Train), checkpoints, Hugging Face
export and KV-cache generation."""
