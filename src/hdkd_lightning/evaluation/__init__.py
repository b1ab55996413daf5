"""What is made from scored predictions: metric definitions, the test callback, evaluation files,
statistics, figures and reports, and comparisons of many runs (``hdkd-report``). Imports no ``lit``."""
