"""Evaluations: perplexity, zero-shot accuracy (lm-eval), SAM single-point IoU."""
