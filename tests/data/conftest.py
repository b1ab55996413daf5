"""Fixtures of the data tests; the builders live in hdkd_data_fixtures.py (importable by name
because pytest puts this folder on sys.path)."""

from hdkd_data_fixtures import brain_root, cache_env, ham_root  # noqa: F401
