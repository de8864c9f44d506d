"""Text corpora, tokenization, calibration sampling and local zero-shot tasks."""
