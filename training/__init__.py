"""Pretraining (model, shard reader, DeepSpeed loop, Ray Train wiring). Not built yet: issue [3 of 6]."""
