"""Runners: scoring with the cache, selecting, fine-tuning, evaluating, comparing."""
