"""The pruning methods side by side on digits: one network, one training budget.

    PYTHONPATH=. python benchmarks/methods_digits.py --out docs/methods          # ~5 min
    PYTHONPATH=. python benchmarks/methods_digits.py --seeds 1 --quick           # smoke
    PYTHONPATH=. python benchmarks/methods_digits.py --timing-only --out docs/methods

64-256-128-10, float32, Adam (lr 1e-3), batch 64, on scikit-learn's digits (1,347
training and 450 test images, the split of ``spp.data.digits(seed=0)``), over model
seeds 0..n-1. Every row gets the same training budget, DENSE + TUNE epochs:

- after-training methods train the dense network DENSE epochs, prune, and fine-tune
  TUNE epochs: one-shot (magnitude with each scope, Taylor, random) or gradually along
  the cubic schedule in 5 steps of TUNE / 5 epochs (magnitude, movement);
- pruning during training: WARM epochs from initialization, then the cubic schedule in
  5 steps over the remaining DENSE + TUNE - WARM epochs (magnitude, movement: the
  regime movement pruning is made for, weights that still move);
- SNIP prunes at initialization and trains DENSE + TUNE epochs;
- the lottery ticket is found by iterative magnitude pruning, every round DENSE + TUNE
  epochs (the search costs more, as in the papers), and the ticket is trained DENSE +
  TUNE epochs from its rewind point; its random-reinit control the same;
- structured pruning removes a fraction of every hidden layer's units after DENSE
  epochs and fine-tunes TUNE epochs; its payoff, the dense speed of the smaller
  network, is timed separately (``--timing-only``, on a quiet machine: medians of
  interleaved runs, repeated).

Writes OUT/results.json (every accuracy of every seed, the settings, the timings) and
prints the Markdown tables the README quotes.
"""

import argparse
import copy
import json
import os
import sys
import time

import numpy as np

import sparseprune as spp
from sparseprune.app.profile import measure

SIZES = [64, 256, 128, 10]
# tol=None: every row trains its whole budget (fit would otherwise stop when the loss
# stalls, at a different epoch for each method).
FIT = dict(optimizer="adam", lr=1e-3, batch_size=64, tol=None)
DENSE_EPOCHS, TUNE_EPOCHS, WARM_EPOCHS = 40, 20, 5
SPARSITIES = (0.8, 0.9, 0.95, 0.98)
# Lottery rounds per target: about a third of what remains pruned in each round.
ROUNDS = {0.8: 4, 0.9: 5, 0.95: 6, 0.98: 8}
UNIT_FRACTIONS = (0.25, 0.5, 0.75, 0.9)
UNIT_CRITERIA = ("l2", "taylor")
TIMING_BATCHES = (1, 64, 450)

ROWS = {
    "one-shot magnitude, global": "magnitude:global",
    "one-shot magnitude, layer": "magnitude:layer",
    "one-shot magnitude, ERK": "magnitude:erk",
    "gradual magnitude (cubic, 5 steps)": "gradual:magnitude",
    "one-shot Taylor, global": "taylor:global",
    "SNIP at initialization, global": "snip",
    "movement (cubic, 5 steps), global": "gradual:movement",
    "gradual magnitude during training (cubic, from epoch 5)": "during:magnitude",
    "movement during training (cubic, from epoch 5)": "during:movement",
    "one-shot random, global": "random:global",
    "lottery ticket (rewind to init)": "lottery",
    "random reinit of the ticket": "reinit",
}


def test_accuracy(model, data):
    return model.score(data[2], data[3])


def one_shot(base, data, sparsity, criterion, scope, seed, tune):
    model = copy.deepcopy(base)
    spp.prune.prune(model, sparsity, criterion=criterion, data=data[:2], scope=scope)
    model.fit(data[0], data[1], epochs=tune, progress=False, seed=seed, **FIT)
    return test_accuracy(model, data)


def gradual(base, data, sparsity, criterion, seed, tune):
    model = copy.deepcopy(base)
    spp.prune.iterative(model, data[0], data[1], sparsity, steps=5, schedule="cubic",
                        finetune_epochs=tune // 5, criterion=criterion, progress=False,
                        seed=seed, **FIT)
    return test_accuracy(model, data)


def during(data, sparsity, criterion, seed, warm, epochs):
    """Prune along the cubic schedule while the network trains from its start."""
    model = spp.MLP(SIZES, seed=seed)
    model.fit(data[0], data[1], epochs=warm, progress=False, seed=seed, **FIT)
    spp.prune.iterative(model, data[0], data[1], sparsity, steps=5, schedule="cubic",
                        finetune_epochs=(epochs - warm) // 5, criterion=criterion,
                        progress=False, seed=seed, **FIT)
    return test_accuracy(model, data)


def snip(data, sparsity, seed, epochs):
    model = spp.MLP(SIZES, seed=seed)
    spp.prune.prune(model, sparsity, criterion="snip", data=data[:2])
    model.fit(data[0], data[1], epochs=epochs, progress=False, seed=seed, **FIT)
    return test_accuracy(model, data)


def lottery(data, sparsity, seed, epochs):
    """(ticket's accuracy, reinit's accuracy, the rounds' records)."""
    model = spp.MLP(SIZES, seed=seed)
    ticket = spp.prune.lottery(model, data[0], data[1], sparsity, rounds=ROUNDS[sparsity],
                               epochs=epochs, progress=False, seed=seed, **FIT)
    control = spp.prune.reinit(ticket, seed=seed + 1000)
    control.fit(data[0], data[1], epochs=epochs, progress=False, seed=seed, **FIT)
    return test_accuracy(model, data), test_accuracy(control, data), ticket.as_dict()


def structured(base, data, fraction, criterion, seed, tune):
    model = copy.deepcopy(base)
    spp.prune.neurons(model, fraction, criterion=criterion, data=data[:2])
    model.fit(data[0], data[1], epochs=tune, progress=False, seed=seed, **FIT)
    return test_accuracy(model, data), list(model.sizes), model.count_parameters()[0]


def run_seed(seed, data, dense_epochs, tune, warm, say):
    """Every method at every sparsity for one model seed: {key: {sparsity: acc}}."""
    started = time.perf_counter()
    total = dense_epochs + tune
    out = {"seed": seed, "rows": {key: {} for key in ROWS.values()}, "structured": {},
           "lottery_rounds": {}}
    dense = spp.MLP(SIZES, seed=seed)
    dense.fit(data[0], data[1], epochs=total, progress=False, seed=seed, **FIT)
    out["dense"] = test_accuracy(dense, data)
    base = spp.MLP(SIZES, seed=seed)
    base.fit(data[0], data[1], epochs=dense_epochs, progress=False, seed=seed, **FIT)
    rows = out["rows"]
    for s in SPARSITIES:
        key = str(s)
        for scope in ("global", "layer", "erk"):
            rows[f"magnitude:{scope}"][key] = one_shot(base, data, s, "magnitude", scope,
                                                       seed, tune)
        rows["taylor:global"][key] = one_shot(base, data, s, "taylor", "global", seed, tune)
        rows["random:global"][key] = one_shot(base, data, s, "random", "global", seed, tune)
        rows["gradual:magnitude"][key] = gradual(base, data, s, "magnitude", seed, tune)
        rows["gradual:movement"][key] = gradual(base, data, s, "movement", seed, tune)
        for criterion in ("magnitude", "movement"):
            rows[f"during:{criterion}"][key] = during(data, s, criterion, seed, warm, total)
        rows["snip"][key] = snip(data, s, seed, total)
        rows["lottery"][key], rows["reinit"][key], out["lottery_rounds"][key] = lottery(
            data, s, seed, total)
    for criterion in UNIT_CRITERIA:
        out["structured"][criterion] = {}
        for f in UNIT_FRACTIONS:
            acc, sizes, params = structured(base, data, f, criterion, seed, tune)
            out["structured"][criterion][str(f)] = {"accuracy": acc, "sizes": sizes,
                                                    "parameters": params}
    say(f"seed {seed}: dense {out['dense']:.4f}, {time.perf_counter() - started:.0f} s")
    return out


def shrunk_sizes(fraction):
    return [SIZES[0]] + [n - round(fraction * n) for n in SIZES[1:-1]] + [SIZES[-1]]


def timing(repeats, budget, say):
    """Median predict_proba times (ms) of the dense network at every fraction of units
    removed (weights do not change the time of a dense product), and of the 90%-sparse
    SparseMLP for comparison: {name: {batch: [median of each repeat]}}."""
    X = spp.data.digits(seed=0)[2]
    models = {"dense": spp.MLP(SIZES, seed=0)}
    for f in UNIT_FRACTIONS:
        models[f"units -{f:.0%}"] = spp.MLP(shrunk_sizes(f), seed=0)
    sparse = spp.MLP(SIZES, seed=0)
    spp.prune.magnitude(sparse, 0.9)
    models["sparse 90% (SparseMLP)"] = sparse.to_sparse()
    times = {name: {str(b): [] for b in TIMING_BATCHES} for name in models}
    for r in range(repeats):
        for b in TIMING_BATCHES:
            Xb = np.ascontiguousarray(X[:b])
            # "dense" in every name but the sparse model's: the pause after each BLAS
            # repetition lets OpenBLAS's threads go idle before the next contender.
            got = measure({(f"dense {name}" if "sparse" not in name else name):
                           (lambda m=m, Xb=Xb: m.predict_proba(Xb)) for name, m in models.items()},
                          budget)
            for name in models:
                key = f"dense {name}" if "sparse" not in name else name
                times[name][str(b)].append(got[key] * 1e3)
        say(f"timing repeat {r + 1}/{repeats} done")
    return times


def mean_sd(values):
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def cell(values):
    m, s = mean_sd(100 * np.asarray(values))
    return f"{m:.2f} ± {s:.2f}"


def tables(results):
    seeds = results["seeds"]
    lines = [f"Test accuracy (%), mean ± sd over {len(seeds)} seeds; dense network "
             f"({results['settings']['dense_epochs'] + results['settings']['tune_epochs']} "
             f"epochs): **{cell([s['dense'] for s in seeds])}**", "",
             "| method | " + " | ".join(f"{s:.0%}" for s in SPARSITIES) + " |",
             "|---|" + "---:|" * len(SPARSITIES)]
    for name, key in ROWS.items():
        lines.append(f"| {name} | " + " | ".join(
            cell([s["rows"][key][str(sp)] for s in seeds]) for sp in SPARSITIES) + " |")
    lines += ["", "Structured: hidden units removed from every hidden layer after "
              f"{results['settings']['dense_epochs']} epochs, fine-tuned "
              f"{results['settings']['tune_epochs']}; test accuracy (%), mean ± sd.", ""]
    header = "| units removed | sizes | parameters | " + " | ".join(
        f"{c} + fine-tuning" for c in UNIT_CRITERIA)
    timing_data = results.get("timing")
    if timing_data:
        header += " | " + " | ".join(f"ms, batch {b}" for b in TIMING_BATCHES)
    lines += [header + " |", "|---|---|---:|" + "---:|" * (len(UNIT_CRITERIA) + (
        len(TIMING_BATCHES) if timing_data else 0))]

    def times(name):
        out = []
        for b in TIMING_BATCHES:
            t = timing_data[name][str(b)]
            base = np.median(timing_data["dense"][str(b)])
            out.append(f"{np.median(t):.3f} ({base / np.median(t):.2f}x)")
        return out

    def spread(name):
        return ", ".join(f"batch {b}: {min(timing_data[name][str(b)]):.3f}-"
                         f"{max(timing_data[name][str(b)]):.3f}" for b in TIMING_BATCHES)

    first = seeds[0]["structured"][UNIT_CRITERIA[0]]
    row = ["0%", "-".join(map(str, SIZES)), f"{sum(a * b + b for a, b in zip(SIZES, SIZES[1:])):,}"]
    row += [cell([s["dense"] for s in seeds])] * len(UNIT_CRITERIA)
    if timing_data:
        row += times("dense")
    lines.append("| " + " | ".join(row) + " |")
    for f in UNIT_FRACTIONS:
        entry = first[str(f)]
        row = [f"{f:.0%}", "-".join(map(str, entry["sizes"])), f"{entry['parameters']:,}"]
        row += [cell([s["structured"][c][str(f)]["accuracy"] for s in seeds])
                for c in UNIT_CRITERIA]
        if timing_data:
            row += times(f"units -{f:.0%}")
        lines.append("| " + " | ".join(row) + " |")
    if timing_data:
        settings = results.get("timing_settings", {})
        lines += ["", f"Times: median ms of `predict_proba` (speedup over the full network), "
                  f"BLAS threads: {settings.get('blas_threads', '?')}; the medians of "
                  f"{settings.get('repeats', '?')} repeats ranged: full network "
                  f"{spread('dense')}; half the units {spread('units -50%')}.",
                  "", "For comparison, the 90%-sparse network as a SparseMLP: " + ", ".join(
                      f"{t} ms at batch {b}" for b, t in zip(
                          TIMING_BATCHES, times("sparse 90% (SparseMLP)")))]
    return "\n".join(lines)


def lottery_verdict(results):
    """The lottery ticket against the dense network and against its random-reinit
    control, seed by seed (the same seed's networks side by side)."""
    seeds = results["seeds"]
    dense = np.array([s["dense"] for s in seeds])
    lines = ["| sparsity | ticket - dense (points) | reinit - dense | ticket - reinit | "
             "ticket above reinit |", "|---:|---:|---:|---:|---:|"]
    for sp in SPARSITIES:
        ticket = np.array([s["rows"]["lottery"][str(sp)] for s in seeds])
        control = np.array([s["rows"]["reinit"][str(sp)] for s in seeds])
        lines.append(f"| {sp:.0%} | {cell(ticket - dense)} | {cell(control - dense)} | "
                     f"{cell(ticket - control)} | {int((ticket > control).sum())} of "
                     f"{len(seeds)} seeds |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="docs/methods")
    parser.add_argument("--quick", action="store_true", help="a tenth of the epochs")
    parser.add_argument("--timing-only", action="store_true",
                        help="time the shrunk networks, add to OUT/results.json")
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument("--blas-threads", choices=("all", "1"), default="1",
                        help="time with BLAS on every core or held to one (default: one, "
                             "the reproducible setting on a shared machine)")
    args = parser.parse_args(argv)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    path = os.path.join(args.out, "results.json")
    os.makedirs(args.out, exist_ok=True)
    if args.timing_only:
        with open(path) as f:
            results = json.load(f)
        if args.blas_threads == "1":
            with spp.single_threaded_blas():
                results["timing"] = timing(args.timing_repeats, 0.3, say)
        else:
            results["timing"] = timing(args.timing_repeats, 0.3, say)
        results["timing_settings"] = {"blas_threads": args.blas_threads,
                                      "repeats": args.timing_repeats, "budget_s": 0.3}
    else:
        dense_epochs, tune, warm = ((DENSE_EPOCHS // 10, 5, 1) if args.quick
                                    else (DENSE_EPOCHS, TUNE_EPOCHS, WARM_EPOCHS))
        data = spp.data.digits(seed=0)
        started = time.perf_counter()
        # One BLAS thread: the numbers do not depend on it, and a neighbour's load
        # slows multithreaded small products a hundredfold on a shared machine.
        with spp.single_threaded_blas():
            seeds = [run_seed(s, data, dense_epochs, tune, warm, say)
                     for s in range(args.seeds)]
        results = {"settings": {"sizes": SIZES, "fit": FIT, "dense_epochs": dense_epochs,
                                "tune_epochs": tune, "warm_epochs": warm,
                                "sparsities": list(SPARSITIES),
                                "lottery_rounds": {str(k): v for k, v in ROUNDS.items()},
                                "unit_fractions": list(UNIT_FRACTIONS), "data": "digits, seed 0",
                                "quick": args.quick},
                   "seeds": seeds, "seconds": time.perf_counter() - started}
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(tables(results))
    print()
    print(lottery_verdict(results))


if __name__ == "__main__":
    main()
