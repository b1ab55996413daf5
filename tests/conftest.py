"""Shared fixtures. Tests that read ../shared skip with a reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
PARITY_DIR = SHARED / "reference" / "official_parity"
DATASETS_DIR = SHARED / "datasets"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not (PARITY_DIR / "expected.pt").is_file():
        pytest.skip(f"parity vectors not found at {PARITY_DIR} (../shared is absent)")
    return PARITY_DIR


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    if not DATASETS_DIR.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS_DIR} (../shared is absent)")
    return DATASETS_DIR


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits when the cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Marks by what a test uses: ``shared`` for ../shared (parity vectors, real datasets), ``slow``
    for the end-to-end command tests of tests/app (subprocesses, real training runs)."""
    app = Path(__file__).resolve().parent / "app"
    for item in items:
        if {"parity_dir", "datasets_dir"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)
        if app in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)
