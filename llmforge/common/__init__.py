"""Shared plumbing (config base, Ray session, metrics); imports none of llmforge's packages."""
