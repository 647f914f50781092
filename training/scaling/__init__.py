"""Scaling laws and data ablations on our own pretraining runs.

- `law`: L(N, D) = E + A/N^alpha + B/D^beta, fitted as Besiroglu et al. 2024 (log-sum-exp form,
  Huber loss on log L, L-BFGS from a grid of starts); compute-optimal N and D; isoFLOP minima.
  Pure numpy/scipy.
- `config`: the sweep's and the ablation's configs, expanded into checked pretraining configs.
- `runner`: the runs as Ray tasks (standalone pretraining each), resumable; bits per byte.
- `sweep` (`llmforge train sweep`), `ablate` (`llmforge train ablate`), `fit` (`llmforge
  scaling fit`), `plots`.
"""
