"""Sparsity that is learned, on digits, beside gradual magnitude pruning: RigL and SET
trained sparse from the start, L1, L0 and sparse variational dropout.

    PYTHONPATH=. python benchmarks/learned_digits.py --out docs/learned      # ~10 min
    PYTHONPATH=. python benchmarks/learned_digits.py --seeds 1 --quick       # smoke

The network, data, optimizer and budget of ``methods_digits.py`` (64-256-128-10,
float32, Adam 1e-3, batch 64, DENSE + TUNE = 60 epochs a row), over model seeds 0..n-1:

- RigL and SET: 60 epochs from a random ERK mask, connections moved every 50 steps
  (1,347 samples: 22 steps an epoch; drop fraction 0.3, cosine);
- gradual magnitude (cubic, 5 steps): 40 dense epochs, then 20 of pruning and fine-tuning,
  as in ``methods_digits.py`` (the reference RigL is held to);
- L1: 60 epochs with ``fit(l1=...)``, for each penalty in L1_PENALTIES;
- L0: 40 dense epochs, then 20 of ``prune.l0`` for each price in L0_PRICES;
- sparse variational dropout: 40 dense epochs, then 20 epochs of ``mdl.variational``
  with the log-uniform prior for each KL weight in VD_WEIGHTS, pruned at log alpha > 3.

Writes OUT/results.json and prints the Markdown table the README quotes.
"""

import argparse
import copy
import json
import os
import sys
import time

import numpy as np

import sparseprune as spp
from methods_digits import DENSE_EPOCHS, FIT, SIZES, TUNE_EPOCHS, cell, gradual, mean_sd

TOTAL = DENSE_EPOCHS + TUNE_EPOCHS
SPARSITIES = (0.9, 0.95)
UPDATE_EVERY = 50
# Adam moves every weight by about lr a step whatever its gradient's scale, so the
# proximal shrinkage lr * l1 bites at l1 of order 0.1, not 1e-3.
L1_PENALTIES = (0.3, 1.0)
L0_PRICES = (3e-4, 1e-3)
VD_WEIGHTS = (0.1, 1.0)


def accuracy(model, data):
    return model.score(data[2], data[3])


def run_seed(seed, data, say):
    X, y = data[:2]
    out = {"seed": seed}
    base = spp.MLP(SIZES, seed=seed)
    base.fit(X, y, epochs=DENSE_EPOCHS, progress=False, seed=seed, **FIT)
    dense = copy.deepcopy(base)
    dense.fit(X, y, epochs=TUNE_EPOCHS, progress=False, seed=seed, **FIT)
    out["dense"] = accuracy(dense, data)
    for s in SPARSITIES:
        out[f"gradual:{s}"] = (s, gradual(base, data, s, "magnitude", seed, TUNE_EPOCHS))
        for method in ("rigl", "set"):
            model = spp.MLP(SIZES, seed=seed)
            spp.prune.dynamic(model, X, y, s, method=method, epochs=TOTAL,
                              update_every=UPDATE_EVERY, progress=False, seed=seed,
                              **{k: v for k, v in FIT.items() if k != "tol"})
            out[f"{method}:{s}"] = (model.sparsity, accuracy(model, data))
    for lam in L1_PENALTIES:
        model = spp.MLP(SIZES, seed=seed)
        model.fit(X, y, epochs=TOTAL, l1=lam, progress=False, seed=seed, **FIT)
        out[f"l1:{lam:g}"] = (model.sparsity, accuracy(model, data))
    for lam in L0_PRICES:
        model = copy.deepcopy(base)
        spp.prune.l0(model, X, y, lam=lam, epochs=TUNE_EPOCHS, lr=FIT["lr"],
                     batch_size=FIT["batch_size"], seed=seed, progress=False)
        out[f"l0:{lam:g}"] = (model.sparsity, accuracy(model, data))
    for weight in VD_WEIGHTS:
        post = spp.mdl.variational(base, X, y, epochs=TUNE_EPOCHS, prior="log-uniform",
                                   kl_weight=weight, batch_size=FIT["batch_size"],
                                   seed=seed, progress=False)
        pruned = post.prune()
        out[f"vd:{weight:g}"] = (pruned.sparsity, accuracy(pruned, data))
    say(f"seed {seed}: " + ", ".join(f"{k} {v[1] if isinstance(v, tuple) else v:.4f}"
                                     for k, v in out.items() if k != "seed"))
    return out


def table(results):
    seeds = results["seeds"]
    dense = [r["dense"] for r in seeds]
    lines = ["| method | sparsity | test accuracy (%) |", "|---|---:|---:|",
             f"| dense, {TOTAL} epochs | 0% | {cell(dense)} |"]
    for key, name in (("gradual", "gradual magnitude (cubic), after 40 dense epochs"),
                      ("rigl", "RigL, sparse from the start"),
                      ("set", "SET, sparse from the start")):
        for s in SPARSITIES:
            sp = [r[f"{key}:{s}"][0] for r in seeds]
            acc = [r[f"{key}:{s}"][1] for r in seeds]
            lines.append(f"| {name} | {100 * np.mean(sp):.1f}% | {cell(acc)} |")
    for prefix, values, name in (("l1", L1_PENALTIES, "L1, fit(l1={:g})"),
                                 ("l0", L0_PRICES, "L0 gates, lam={:g}"),
                                 ("vd", VD_WEIGHTS, "sparse variational dropout, KL weight {:g}")):
        for v in values:
            sp = [r[f"{prefix}:{v:g}"][0] for r in seeds]
            acc = [r[f"{prefix}:{v:g}"][1] for r in seeds]
            m, sd = mean_sd(100 * np.asarray(sp))
            lines.append(f"| {name.format(v)} | {m:.1f}% (±{sd:.1f}) | {cell(acc)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the epochs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    global DENSE_EPOCHS, TUNE_EPOCHS, TOTAL
    if args.quick:
        DENSE_EPOCHS, TUNE_EPOCHS = 4, 5
        TOTAL = DENSE_EPOCHS + TUNE_EPOCHS
    data = spp.data.digits(seed=0)
    started = time.perf_counter()
    results = {"settings": {"sizes": SIZES, "fit": FIT, "dense_epochs": DENSE_EPOCHS,
                            "tune_epochs": TUNE_EPOCHS, "update_every": UPDATE_EVERY},
               "seeds": [run_seed(seed, data, print) for seed in range(args.seeds)]}
    results["seconds"] = time.perf_counter() - started
    text = table(results)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, "table.md"), "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    sys.exit(main())
