"""Evaluation beyond one split's metrics: comparisons of many runs (``hdkd-report``)."""
