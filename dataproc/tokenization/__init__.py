"""Tokenization: BPE training and loading, batch encoding, domain mixture, shard writing, the
tokenize job over curated documents, text files to shards, and shard summaries."""
