"""Sparse variational dropout on digits at a longer budget than the methods table's.

    PYTHONPATH=. python benchmarks/vd_digits.py --out docs/learned        # ~8 min

The table's 20 epochs of ``mdl.variational`` (log-uniform prior) after 40 dense ones
leave sparse VD short of its sparsity at its accuracy; here it runs VD_EPOCHS epochs,
from the same 40-epoch dense networks (seeds 0..n-1), for each KL weight.
"""

import argparse
import json
import os
import sys

import numpy as np

import sparseprune as spp
from methods_digits import DENSE_EPOCHS, FIT, SIZES, cell

VD_EPOCHS = 200
VD_WEIGHTS = (0.1, 0.3, 1.0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    X, y, Xt, yt = spp.data.digits(seed=0)
    rows = {w: [] for w in VD_WEIGHTS}
    dense = []
    for seed in range(args.seeds):
        base = spp.MLP(SIZES, seed=seed)
        base.fit(X, y, epochs=DENSE_EPOCHS, progress=False, seed=seed, **FIT)
        dense.append(base.score(Xt, yt))
        for w in VD_WEIGHTS:
            pruned = spp.mdl.variational(base, X, y, epochs=VD_EPOCHS, prior="log-uniform",
                                         kl_weight=w, batch_size=FIT["batch_size"],
                                         seed=seed, progress=False).prune()
            rows[w].append((pruned.sparsity, pruned.score(Xt, yt)))
            print(f"seed {seed} weight {w:g}: sparsity {rows[w][-1][0]:.4f}, "
                  f"accuracy {rows[w][-1][1]:.4f}", flush=True)
    lines = ["| sparse VD, KL weight | sparsity | test accuracy (%) |", "|---:|---:|---:|",
             f"| (dense, {DENSE_EPOCHS} epochs) | 0% | {cell(dense)} |"]
    for w, results in rows.items():
        sp = np.array([r[0] for r in results])
        lines.append(f"| {w:g} | {100 * sp.mean():.2f}% | {cell([r[1] for r in results])} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "vd.json"), "w") as f:
            json.dump({"dense": dense, "rows": {str(w): r for w, r in rows.items()},
                       "vd_epochs": VD_EPOCHS, "dense_epochs": DENSE_EPOCHS}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    sys.exit(main())
