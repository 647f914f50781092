"""Evaluation of any model (an llmforge checkpoint/run dir or a Hugging Face directory).

scoring (log-likelihood on shared contexts, rolling windows) · tasks (HF-schema and llm-foundry
ICL loaders) · multiple_choice / perplexity (`llmforge eval mc|ppl`, in process or over Ray
actors: replicas) · judge / win_rate (pairwise, position-swapped, length-controlled) · report.
Never imports `alignment` or `dataproc`.
"""
