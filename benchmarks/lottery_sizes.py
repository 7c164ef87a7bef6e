"""The lottery-ticket experiment at other network sizes, on digits.

    PYTHONPATH=. python benchmarks/lottery_sizes.py 64-32-16-10 --sparsity 0.5 0.8 0.9
    PYTHONPATH=. python benchmarks/lottery_sizes.py 64-1024-512-10 --seeds 3 \\
        --sparsity 0.9 0.95 0.98                                    # ~17 minutes

The procedure of ``benchmarks/methods_digits.py`` (Adam lr 1e-3, batch 64, 60 epochs
per training, rewind to initialization, about a third of what remains pruned per
round): per seed the dense network, the ticket and its random-reinit control. Writes
``OUT/lottery_<sizes>.json`` and prints each seed-paired difference.
"""

import argparse
import json
import os

import numpy as np

import sparseprune as spp

FIT = dict(optimizer="adam", lr=1e-3, batch_size=64, tol=None)  # every epoch trains
EPOCHS = 60
ROUNDS = {0.5: 2, 0.8: 4, 0.9: 5, 0.95: 6, 0.98: 8}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sizes", help="layer widths, e.g. 64-32-16-10")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9],
                        choices=sorted(ROUNDS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="docs/methods")
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split("-")]
    X, y, Xt, yt = spp.data.digits(seed=0)
    out = {"sizes": sizes, "fit": FIT, "epochs": EPOCHS, "dense": [], "ticket": {},
           "reinit": {}}
    with spp.single_threaded_blas():
        for seed in range(args.seeds):
            dense = spp.MLP(sizes, seed=seed)
            dense.fit(X, y, epochs=EPOCHS, progress=False, seed=seed, **FIT)
            out["dense"].append(dense.score(Xt, yt))
            for s in args.sparsity:
                model = spp.MLP(sizes, seed=seed)
                ticket = spp.prune.lottery(model, X, y, s, rounds=ROUNDS[s], epochs=EPOCHS,
                                           progress=False, seed=seed, **FIT)
                control = spp.prune.reinit(ticket, seed=seed + 1000)
                control.fit(X, y, epochs=EPOCHS, progress=False, seed=seed, **FIT)
                out["ticket"].setdefault(str(s), []).append(model.score(Xt, yt))
                out["reinit"].setdefault(str(s), []).append(control.score(Xt, yt))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"lottery_{args.sizes}.json"), "w") as f:
        json.dump(out, f, indent=1)

    def cell(a):
        return f"{100 * a.mean():.2f} ± {100 * a.std(ddof=1):.2f}"

    dense = np.array(out["dense"])
    print(f"{args.sizes}: dense {cell(dense)}\n")
    print("| sparsity | ticket | reinit | ticket - dense | reinit - dense | ticket - reinit "
          "| ticket above reinit |\n|---:|---:|---:|---:|---:|---:|---:|")
    for s in args.sparsity:
        t, r = np.array(out["ticket"][str(s)]), np.array(out["reinit"][str(s)])
        print(f"| {s:.0%} | {cell(t)} | {cell(r)} | {cell(t - dense)} | {cell(r - dense)} | "
              f"{cell(t - r)} | {int((t > r).sum())} of {len(t)} seeds |")


if __name__ == "__main__":
    main()
