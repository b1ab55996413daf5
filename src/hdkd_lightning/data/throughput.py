"""Data-loading throughput: decode+resize+augment per image vs cache-read+augment.

``measure(...)`` returns images/s for both paths over the same training records with the
training pipeline (and, for reference, the eval pipeline), plus the one-off cache build time.
With ``num_workers=0`` it measures the per-core cost (what an epoch costs one CPU); with
workers it goes through a DataLoader (batches of ``batch_size``), as training does.

    python -c "from hdkd_lightning.data.throughput import measure; print(measure('ham10000', '/data/ham', 224))"
"""

from __future__ import annotations

import time
from typing import Any


def _rate(dataset, n: int, num_workers: int, batch_size: int) -> float:
    n = min(n, len(dataset))
    if num_workers == 0:
        dataset[0]  # warm-up (memory map, first decode)
        t = time.perf_counter()
        for i in range(n):
            dataset[i]
        return n / (time.perf_counter() - t)
    from torch.utils.data import DataLoader, Subset

    from hdkd_lightning.data.datasets import worker_init

    loader = DataLoader(Subset(dataset, range(n)), batch_size=batch_size, num_workers=num_workers,
                        worker_init_fn=worker_init)
    it = iter(loader)
    next(it)  # workers started, first batch
    seen = 0
    t = time.perf_counter()
    for b in it:
        seen += len(b["label"])
    return seen / max(time.perf_counter() - t, 1e-9)


def measure(source: str = "ham10000", root: str | None = None, image_size: int = 224,
            n_images: int = 500, num_workers: int = 0, batch_size: int = 32,
            cache_dir: str | None = None, **data_kwargs: Any) -> dict:
    """images/s for decode+augment and cache+augment (train pipeline) and the eval pipeline."""
    from hdkd_lightning.data.datamodule import DEFAULT_CACHE_DIR, HdkdDataModule

    cache_dir = cache_dir or DEFAULT_CACHE_DIR
    common = dict(source=source, root=root, image_size=image_size, num_workers=num_workers,
                  **data_kwargs)
    decode = HdkdDataModule(cache={"images": False, "dir": cache_dir}, **common)
    decode.setup()
    cached = HdkdDataModule(cache={"images": True, "dir": cache_dir}, **common)
    t = time.perf_counter()
    cached.prepare_data()
    build_s = time.perf_counter() - t
    cached.setup()
    out = {
        "source": source, "image_size": image_size, "num_workers": num_workers,
        "n_images": min(n_images, len(decode.split_records("train"))),
        "decode_train_images_per_s": _rate(decode.dataset("train"), n_images, num_workers, batch_size),
        "cache_train_images_per_s": _rate(cached.dataset("train"), n_images, num_workers, batch_size),
        "decode_eval_images_per_s": _rate(decode.dataset("train", train_transform=False), n_images,
                                          num_workers, batch_size),
        "cache_eval_images_per_s": _rate(cached.dataset("train", train_transform=False), n_images,
                                         num_workers, batch_size),
        "cache_build_or_open_s": round(build_s, 2),
    }
    for k in list(out):
        if k.endswith("_per_s"):
            out[k] = round(out[k], 1)
    out["speedup_train"] = round(out["cache_train_images_per_s"] / out["decode_train_images_per_s"], 2)
    out["speedup_eval"] = round(out["cache_eval_images_per_s"] / out["decode_eval_images_per_s"], 2)
    return out
