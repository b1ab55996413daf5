"""Decode vs cache throughput of the data pipeline (see hdkd_lightning.data.throughput).

    python benchmarks/data_throughput.py --source ham10000 --root ../shared/datasets/ham10000 --sizes 64 224
"""

from __future__ import annotations

import argparse
import json

from hdkd_lightning.data.throughput import measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="ham10000")
    p.add_argument("--root", default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    p.add_argument("--n-images", type=int, default=500)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--cache-dir", default=None)
    a = p.parse_args()
    for size in a.sizes:
        print(json.dumps(measure(a.source, a.root, size, a.n_images, a.num_workers,
                                 cache_dir=a.cache_dir)))


if __name__ == "__main__":
    main()
