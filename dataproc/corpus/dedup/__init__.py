"""Exact and near-duplicate removal: pure numpy/pyarrow batch functions (`text_norm`, `minhash`)
and Ray Data plan builders (`exact`, `lsh`). Importing this package does not import Ray."""
