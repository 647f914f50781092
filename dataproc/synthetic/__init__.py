"""Synthetic data with known ground truth: sample WARC files for the demo, tests and benchmarks
(`llmforge data sample-warc`), and generated learnable text."""
