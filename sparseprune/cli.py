"""The ``sparseprune`` command line: ``sparseprune demo``."""

import argparse
import copy
import sys
import time

from . import data, prune
from .model import MLP

# The notebook's story, per data set: the network, how the baseline trains, and how
# pruning fine-tunes. Blobs follow the notebook (one hidden layer, full-batch descent);
# digits is the README's benchmark network.
SETUPS = {
    "blobs": dict(sizes=[20, 64, 5], fit=dict(epochs=200, lr=0.1, momentum=0.0),
                  finetune=dict(epochs=50, lr=0.02, momentum=0.0), target=0.9),
    "digits": dict(sizes=[64, 256, 128, 10], fit=dict(epochs=50, lr=0.05, batch_size=64),
                   finetune=dict(epochs=10, lr=0.01, batch_size=64), target=0.9),
}


def _table(headers, rows):
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def _load(name, seed):
    if name == "blobs":
        return data.blobs(n_train=1000, n_test=500, n_features=20, n_classes=5, seed=seed)
    return data.digits(seed=seed)


def demo(args):
    """Baseline, one-shot 50% pruning, fine-tuning, then iterative pruning paths."""
    setup = SETUPS[args.data]
    scale = 0.2 if args.quick else 1.0
    fit_opts = dict(setup["fit"], epochs=max(1, round(setup["fit"]["epochs"] * scale)))
    tune = dict(setup["finetune"], epochs=max(1, round(setup["finetune"]["epochs"] * scale)))
    X, y, Xt, yt = _load(args.data, args.seed)
    print(f"data: {args.data}, {X.shape[0]} train and {Xt.shape[0]} test samples, "
          f"{X.shape[1]} features, {int(y.max()) + 1} classes")
    print(f"network: {setup['sizes']}, float32, seed {args.seed}\n")

    started = time.perf_counter()
    base = MLP(setup["sizes"], seed=args.seed)
    base.fit(X, y, validation_data=(Xt, yt), progress=not args.no_progress, **fit_opts)
    base_acc = base.score(Xt, yt)
    rows = [["baseline", "0.0%", base.count_parameters()[1], f"{base_acc:.2%}"]]

    one_shot = copy.deepcopy(base)
    prune.magnitude(one_shot, 0.5)
    rows.append(["magnitude 50%", f"{one_shot.sparsity:.1%}", one_shot.count_parameters()[1],
                 f"{one_shot.score(Xt, yt):.2%}"])
    one_shot.fit(X, y, progress=False, **tune)
    rows.append(["  + fine-tuned", f"{one_shot.sparsity:.1%}", one_shot.count_parameters()[1],
                 f"{one_shot.score(Xt, yt):.2%}"])
    print("\n" + _table(["model", "sparsity", "active params", "test accuracy"], rows))

    tune.pop("epochs")
    lr = tune.pop("lr")
    for schedule in ("linear", "cubic"):
        model = copy.deepcopy(base)
        records = prune.iterative(
            model, X, y, target_sparsity=setup["target"], steps=5, schedule=schedule,
            finetune_epochs=max(1, round(setup["finetune"]["epochs"] * scale)), lr=lr,
            validation_data=(Xt, yt), progress=not args.no_progress, **tune)
        rows = [[r.step, f"{r.target:.1%}", f"{r.sparsity:.1%}", r.active,
                 f"{r.train_accuracy:.2%}", f"{r.val_accuracy:.2%}"] for r in records]
        print(f"\niterative magnitude pruning, {schedule} schedule to {setup['target']:.0%} "
              f"(baseline {base_acc:.2%}):")
        print(_table(["step", "target", "sparsity", "active params", "train acc", "test acc"],
                     rows))
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="sparseprune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="the pruning story end to end, on toy or real data")
    p.add_argument("--data", choices=sorted(SETUPS), default="blobs")
    p.add_argument("--quick", action="store_true", help="a fifth of the epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
