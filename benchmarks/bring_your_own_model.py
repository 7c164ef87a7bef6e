"""The README's "Bring your own model", measured: run as a script, not collected by pytest.

    python benchmarks/bring_your_own_model.py [torch] [sklearn] [estimators] [--quick]
                                              [--runs N]

- torch: a 64-1024-1024-10 MLP trained in PyTorch on the digits, imported, pruned
  iteratively to 90% with fine-tuning, served sparse, and handed back to PyTorch; the
  sparse model's inference against the torch model's own (and the pruned torch model's,
  dense with its masks), interleaved, medians of rounds; each table waits for a quiet
  machine and reports the other processes' load while it ran.
- sklearn: the same in four lines from a scikit-learn MLPClassifier.
- estimators: SparseMLPClassifier on the digits (raw 0-16 pixels) and SparseMLPRegressor
  on the diabetes data, held-out quarters of several splits, against scikit-learn's
  MLPs and (diabetes) LinearRegression.
"""

import os
import sys
import time
import warnings

import numpy as np

import sparseprune as spp

QUICK = "--quick" in sys.argv
#: ``--runs N``: the timing table N times in one run, each after waiting for a quiet
#: machine, with the other processes' load during it.
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 1


def section(title):
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def _busy():
    """(seconds of CPU the whole machine spent busy, this process's CPU seconds, now),
    from /proc/stat (Linux), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter()


def others_load(before, after):
    """Cores' worth of CPU that other processes used between two ``_busy()`` samples."""
    if before is None or after is None:
        return float("nan")
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / (after[2] - before[2])


def wait_for_quiet(limit=0.1, seconds=3, give_up=1800):
    """Wait until other processes have used less than ``limit`` of a core for
    ``seconds`` seconds in a row (at most ``give_up`` seconds); returns whether they
    did. A timing taken on a busy machine measures the neighbours."""
    start, quiet = time.perf_counter(), 0
    while time.perf_counter() - start < give_up:
        before = _busy()
        time.sleep(1.0)
        if before is None:
            return False
        quiet = quiet + 1 if others_load(before, _busy()) < limit else 0
        if quiet >= seconds:
            return True
    return False


def interleaved(calls, rounds=31, min_time=2e-3):
    """{name: (median, min, max)} seconds per call: each round times every contender once
    (in a loop of enough calls to last ``min_time``), contenders alternating."""
    loops = {}
    for name, call in calls.items():
        call()  # warm-up: a first call compiles or measures its plan
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        loops[name] = max(1, int(min_time / max(elapsed, 1e-9)))
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            n = loops[name]
            start = time.perf_counter()
            for _ in range(n):
                call()
            times[name].append((time.perf_counter() - start) / n)
    return {name: (np.median(t), np.min(t), np.max(t)) for name, t in times.items()}


def torch_story():
    import torch
    from torch import nn

    section("PyTorch in, pruned, served sparse, PyTorch out")
    X, y, Xt, yt = spp.data.digits()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Dropout(0.2),
                        nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xb, yb = torch.from_numpy(X), torch.from_numpy(y).long()
    start = time.perf_counter()
    for _ in range(5 if QUICK else 30):
        net.train()
        for idx in torch.randperm(len(xb)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xb[idx]), yb[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        torch_acc = float((net(torch.from_numpy(Xt)).argmax(1).numpy() == yt).mean())
    print(f"trained in PyTorch: test accuracy {torch_acc:.4f} "
          f"({time.perf_counter() - start:.1f} s)")

    model = spp.from_torch(net, loss="softmax")
    print(f"imported: {model}, test accuracy {model.score(Xt, yt):.4f}")
    start = time.perf_counter()
    records = spp.prune.iterative(model, X, y, target_sparsity=0.9, steps=5,
                                  finetune_epochs=2 if QUICK else 10, seed=0,
                                  validation_data=(Xt, yt), progress=False)
    print(f"pruned to {model.sparsity:.0%} in {len(records)} steps with fine-tuning "
          f"({time.perf_counter() - start:.1f} s): test accuracy "
          + " -> ".join(f"{r.val_accuracy:.4f}" for r in records))
    print("layer densities:", [round(layer.density, 3) for layer in model.layers])
    smodel = model.to_sparse()
    back = model.to_torch()
    with torch.no_grad():
        logits = back(torch.from_numpy(Xt)).numpy()
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(),
                               smodel.predict_proba(Xt), rtol=1e-4, atol=1e-5)
    print(f"served sparse: test accuracy {smodel.score(Xt, yt):.4f}, "
          f"{smodel.nbytes() / 1024:.0f} KiB of weights and biases against "
          f"{sum(p.numel() * 4 for p in net.parameters()) / 1024:.0f} KiB in torch")
    print(f"handed back: {type(back).__name__} of {len(back)} modules, masks in "
          f"weight_mask; test accuracy {float((logits.argmax(1) == yt).mean()):.4f}")

    rounds = 7 if QUICK else 31
    for _ in range(RUNS):
        quiet = wait_for_quiet()
        print(f"\ninference, medians of {rounds} interleaved rounds [min, max]; torch "
              f"{torch.__version__} on {torch.get_num_threads()} threads"
              + ("" if quiet else "; THE MACHINE DID NOT GO QUIET") + ":")
        print("batch   torch dense                torch pruned (masks)       "
              "sparseprune sparse        vs torch")
        before = _busy()
        for batch in (1, 64, len(Xt)):
            xs = np.ascontiguousarray(Xt[:batch])
            xtorch = torch.from_numpy(xs)

            def dense(net=net, x=xtorch):
                with torch.inference_mode():
                    return net(x).softmax(1)

            def masked(back=back, x=xtorch):
                with torch.inference_mode():
                    return back(x).softmax(1)

            times = interleaved({"dense": dense, "masked": masked,
                                 "sparse": lambda xs=xs: smodel.predict_proba(xs)},
                                rounds=rounds)
            cells = "   ".join(f"{t[0] * 1e3:6.3f} ms [{t[1] * 1e3:.3f}, {t[2] * 1e3:.3f}]"
                               for t in (times["dense"], times["masked"], times["sparse"]))
            print(f"{batch:5d}   {cells}   {times['dense'][0] / times['sparse'][0]:.2f}x")
        print(f"other processes meanwhile: {others_load(before, _busy()):.2f} cores")


def sklearn_story():
    from sklearn.neural_network import MLPClassifier

    section("scikit-learn in, pruned, served sparse")
    X, y, Xt, yt = spp.data.digits()
    est = MLPClassifier(hidden_layer_sizes=(256, 128), random_state=0).fit(X, y)
    model = spp.from_sklearn(est)
    spp.prune.iterative(model, X, y, target_sparsity=0.9, finetune_epochs=30, seed=0,
                        progress=False)
    smodel = model.to_sparse()
    print(f"MLPClassifier {est.score(Xt, yt):.4f} -> from_sklearn "
          f"{spp.from_sklearn(est).score(Xt, yt):.4f} -> 90% sparse "
          f"{smodel.score(Xt, yt):.4f}")


def estimators():
    from sklearn.datasets import load_diabetes, load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    from sparseprune.sklearn import SparseMLPClassifier, SparseMLPRegressor

    warnings.simplefilter("ignore", ConvergenceWarning)
    section("SparseMLPClassifier on the digits (load_digits, test_size=0.25, stratified)")
    X, y = load_digits(return_X_y=True)
    contenders = {
        "MLPClassifier()": lambda: MLPClassifier(random_state=0),
        "SparseMLPClassifier(sparsity=0)": lambda: SparseMLPClassifier(sparsity=0.0,
                                                                       random_state=0),
        "SparseMLPClassifier()": lambda: SparseMLPClassifier(random_state=0),
        "SparseMLPClassifier(sparsity=0.9)": lambda: SparseMLPClassifier(sparsity=0.9,
                                                                         random_state=0),
    }
    splits = range(2 if QUICK else 5)
    for name, make in contenders.items():
        scores, start = [], time.perf_counter()
        for split in splits:
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y,
                                                  random_state=split)
            scores.append(make().fit(Xtr, ytr).score(Xte, yte))
        per_fit = (time.perf_counter() - start) / len(scores)
        print(f"{name:36s} " + " ".join(f"{s:.4f}" for s in scores)
              + f"   mean {np.mean(scores):.4f}   {per_fit:.1f} s a fit")

    section("SparseMLPRegressor on the diabetes data (test_size=0.25): R^2")
    X, y = load_diabetes(return_X_y=True)
    contenders = {
        "LinearRegression()": LinearRegression,
        "MLPRegressor()": lambda: MLPRegressor(random_state=0),
        "SparseMLPRegressor(sparsity=0)": lambda: SparseMLPRegressor(sparsity=0.0,
                                                                     random_state=0),
        "SparseMLPRegressor()": lambda: SparseMLPRegressor(random_state=0),
        "SparseMLPRegressor(sparsity=0.9)": lambda: SparseMLPRegressor(sparsity=0.9,
                                                                       random_state=0),
    }
    for name, make in contenders.items():
        scores = []
        for split in range(5):
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=split)
            scores.append(make().fit(Xtr, ytr).score(Xte, yte))
        print(f"{name:36s} " + " ".join(f"{s:6.3f}" for s in scores)
              + f"   mean {np.mean(scores):.3f}")


if __name__ == "__main__":
    parts = {"torch": torch_story, "sklearn": sklearn_story, "estimators": estimators}
    chosen = [a for a in sys.argv[1:] if a in parts] or list(parts)
    for part in chosen:
        parts[part]()
