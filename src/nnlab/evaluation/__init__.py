"""Evaluation: metrics of a model on a split (`evaluate`), open-set identification and verification
(`openset`), and a finished run's results on disk (`results`: metrics.json, predictions, plots)."""
