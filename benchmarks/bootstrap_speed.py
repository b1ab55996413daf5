"""Time of the bootstrap intervals of one scored split (hdkd_lightning.evaluation.statistics).

Made-up predictions with HAM10000's test size and class mix (1,500 images, 7 classes); one call of
``bootstrap_intervals`` per resample count, after one warm-up call. Prints the machine first.

    python benchmarks/bootstrap_speed.py --images 1500 --resamples 200 1000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from hdkd_lightning.bench.machine import machine_info
from hdkd_lightning.evaluation.statistics import bootstrap_intervals

HAM_CLASS_MIX = np.array([327, 514, 1099, 115, 1113, 6705, 142], dtype=np.float64)  # akiec .. vasc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1500)
    p.add_argument("--resamples", type=int, nargs="+", default=[200, 1000])
    a = p.parse_args()
    g = np.random.default_rng(0)
    classes = len(HAM_CLASS_MIX)
    labels = g.choice(classes, a.images, p=HAM_CLASS_MIX / HAM_CLASS_MIX.sum())
    logits = g.normal(size=(a.images, classes))
    logits[np.arange(a.images), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    print(json.dumps({"machine": machine_info()}))
    bootstrap_intervals(labels, probs, classes, resamples=10)
    for resamples in a.resamples:
        start = time.perf_counter()
        bootstrap_intervals(labels, probs, classes, resamples=resamples, seed=0)
        print(json.dumps({"images": a.images, "classes": classes, "resamples": resamples,
                          "seconds": round(time.perf_counter() - start, 3)}))


if __name__ == "__main__":
    main()
