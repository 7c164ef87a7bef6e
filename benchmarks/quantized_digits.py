"""Sparse and quantized: the numbers behind the README's section of that name.

    PYTHONPATH=. python benchmarks/quantized_digits.py --out docs/quantized            # ~15 s
    PYTHONPATH=. python benchmarks/quantized_digits.py --codes                         # codes compared
    PYTHONPATH=. python benchmarks/quantized_digits.py --timing --out docs/quantized   # quiet machine

The models are ``sparseprune demo --data digits``'s (seed 0, the same training, the
same pruning): the cubic path's 90% model and the steps of the MDL sweep. For each:

- default: the cubic model at float32 and at 8..2 bits (test accuracy, file bytes, the
  two-part code's model bits at the same b, bytes per nonzero in memory), a scale per
  output unit against one per layer at 4 and 3 bits, and the smallest file within one
  point of the dense baseline over every model and b;
- ``--codes``: the mask coded as Golomb against zlib and lzma of varint gaps, and the
  codes packed at b bits against zlib, lzma and their order-0 entropy;
- ``--timing``: one 4096 x 4096 layer at 90% (float32), float CSR against 8 and 4 bits,
  ``forward_fm`` at batch 1, 64 and 256 (medians of interleaved repetitions, repeated),
  the digits model's ``predict_proba`` float against 8 bits, and the batch-1 quantized
  kernel serial against parallel by nonzeros (``quantized_ops.PARALLEL_MATVEC_NNZ``).

Writes OUT/results.json (or OUT/timing.json) and prints the Markdown tables.
"""

import argparse
import copy
import json
import lzma
import math
import os
import tempfile
import time
import zlib

import numpy as np
import scipy.sparse as sp

import sparseprune as spp
from sparseprune import coding, ops, quantized_ops
from sparseprune.app import demo
from sparseprune.app.profile import measure
from sparseprune.kernels.dense import IDENTITY

BITS = (8, 6, 5, 4, 3, 2)
TOLERANCE = 0.01


def demo_models(seed=0):
    """(data, base, baseline accuracy, cubic model, sweep [(record, model)]), trained as
    ``sparseprune demo --data digits`` trains them."""
    setup = demo.SETUPS["digits"]
    X, y, Xt, yt = demo.load("digits", seed)
    base = spp.MLP(setup["sizes"], seed=seed)
    base.fit(X, y, validation_data=(Xt, yt), progress=False, **setup["fit"])

    def path(target, steps, schedule, tune, callback=None):
        model = copy.deepcopy(base)
        options = {k: v for k, v in tune.items() if k != "epochs"}
        records = spp.prune.iterative(model, X, y, target_sparsity=target, steps=steps,
                                      schedule=schedule, finetune_epochs=tune["epochs"],
                                      validation_data=(Xt, yt), progress=False,
                                      mdl_bits=None, callback=callback, **options)
        return model, records

    cubic, _ = path(setup["target"], 5, "cubic", setup["finetune"])
    states = []
    sweep = setup["sweep"]
    _, records = path(sweep["target"], sweep["steps"], "geometric",
                      dict(setup["finetune"], epochs=sweep["epochs"]),
                      callback=lambda record, model: states.append(copy.deepcopy(model)))
    return (X, y, Xt, yt), base, base.score(Xt, yt), cubic, list(zip(records, states))


def file_bytes(smodel, version=None):
    with tempfile.TemporaryDirectory() as tmp:
        return os.path.getsize(smodel.save(os.path.join(tmp, "m"), version=version))


def dense_bytes(model):
    return sum(layer.weight.nbytes + layer.bias.nbytes for layer in model.layers)


def served(model, bits, data):
    """One row: the model as float32 (bits None) or bits-bit codes."""
    X, y, Xt, yt = data
    smodel = model.to_sparse(backend="sparse") if bits is None else model.to_sparse(bits=bits)
    code = spp.mdl.description_length(model, X, y, bits=32 if bits is None else bits)
    nnz = sum(layer.nnz for layer in smodel.layers)
    row = {"bits": bits, "sparsity": model.sparsity, "test_accuracy": smodel.score(Xt, yt),
           "file_bytes": file_bytes(smodel), "model_bits": code.model_bits,
           "memory_bytes": int(smodel.nbytes()),
           "memory_bytes_per_nonzero": sum(l.nbytes() for l in smodel.layers) / nnz}
    if bits is None:
        row["file_bytes_v2"] = file_bytes(smodel, version=2)
    row["file_vs_model"] = 8 * row["file_bytes"] / code.model_bits
    return row


def per_unit_accuracy(model, bits, Xt, yt):
    """Test accuracy with one quantizer per output unit (its kept weights and bias)
    instead of one per layer: what a scale per unit would buy."""
    layers = []
    for layer in model.to_sparse(backend="sparse").layers:
        indptr, _, kept = layer.csr_arrays()
        kept, bias = kept.astype(np.float64), layer.bias.astype(np.float64)
        for j in range(layer.out_features):
            segment = np.concatenate([kept[indptr[j]:indptr[j + 1]], bias[j:j + 1]])
            q, offset, step = spp.mdl.quantize(segment, bits)
            values = spp.mdl.dequantize(q, offset, step)
            kept[indptr[j]:indptr[j + 1]], bias[j] = values[:-1], values[-1]
        layers.append(layer.with_values(kept, bias))
    return spp.SparseMLP(layers).score(Xt, yt)


def accuracy_and_files(args):
    data, base, base_acc, cubic, sweep = demo_models(args.seed)
    X, y, Xt, yt = data
    dense = dense_bytes(cubic)
    rows = [served(cubic, bits, data) for bits in (None, *BITS)]
    per_unit = {bits: {"per_layer": next(r for r in rows if r["bits"] == bits)["test_accuracy"],
                       "per_unit": per_unit_accuracy(cubic, bits, Xt, yt),
                       "extra_bits": 64 * sum(l.out_features for l in cubic.layers)}
                for bits in (4, 3)}
    candidates = {"cubic path's end": cubic,
                  **{f"sweep step {r.step}": m for r, m in sweep}}
    found = []
    for name, model in candidates.items():
        for bits in range(2, 9):
            smodel = model.to_sparse(bits=bits)
            acc = smodel.score(Xt, yt)
            found.append({"model": name, "bits": bits, "sparsity": model.sparsity,
                          "test_accuracy": acc, "file_bytes": file_bytes(smodel)})
    within = [c for c in found if c["test_accuracy"] >= base_acc - TOLERANCE - 1e-12]
    smallest = min(within, key=lambda c: c["file_bytes"])
    smallest.update(served(candidates[smallest["model"]], smallest["bits"], data))
    result = {"baseline_accuracy": base_acc, "dense_bytes": dense, "cubic": rows,
              "per_unit": per_unit, "candidates": found, "smallest": smallest,
              "tolerance": TOLERANCE}
    print(f"dense float32 parameters: {dense:,} bytes; baseline {100 * base_acc:.2f}%\n")
    print("| values | test acc | file bytes | vs dense | file / model bits | bytes per "
          "nonzero in memory |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        name = "float32" if r["bits"] is None else f"{r['bits']} bits"
        print(f"| {name} | {100 * r['test_accuracy']:.2f}% | {r['file_bytes']:,} | "
              f"{dense / r['file_bytes']:.1f}x | {r['file_vs_model']:.3f} | "
              f"{r['memory_bytes_per_nonzero']:.2f} |")
    print(f"\nfloat32 in format version 2: {rows[0]['file_bytes_v2']:,} bytes")
    for bits, p in per_unit.items():
        print(f"{bits} bits: per layer {100 * p['per_layer']:.2f}%, per unit "
              f"{100 * p['per_unit']:.2f}% (+{p['extra_bits'] // 8:,} bytes of quantizers)")
    print(f"\nsmallest within {100 * TOLERANCE:g} point of the baseline: {smallest['model']} "
          f"({100 * smallest['sparsity']:.2f}%) at {smallest['bits']} bits, "
          f"{smallest['file_bytes']:,} bytes, {100 * smallest['test_accuracy']:.2f}%, "
          f"{dense / smallest['file_bytes']:.1f}x smaller than dense, "
          f"{smallest['file_vs_model']:.3f} of its model bits")
    return result


def varints(gaps):
    return b"".join(coding.varint(int(g)) for g in gaps)


def codes_compared(args):
    _, _, _, cubic, sweep = demo_models(args.seed)
    lz = dict(format=lzma.FORMAT_RAW, filters=coding.LZMA_FILTERS)
    print("| model | log2 C(n, k) | Golomb | zlib of varint gaps | lzma of varint gaps |\n"
          "|---|---:|---:|---:|---:|")
    out = {"mask": [], "values": []}
    for name, model in [("cubic 90%", cubic)] + [(f"sweep {r.step}", m) for r, m in sweep[:10]]:
        sizes = np.zeros(4)
        for layer in model.layers:
            inputs, outputs = layer.kept_positions()
            n, k = layer.n_weights, inputs.size
            positions = np.sort(outputs * layer.in_features + inputs)
            gaps = np.diff(positions, prepend=-1) - 1
            raw = varints(gaps)
            sizes += [spp.mdl.log2_binomial(n, k) / 8, len(coding.encode_positions(positions, n)[3]),
                      len(zlib.compress(raw, 9)), len(lzma.compress(raw, **lz))]
        out["mask"].append({"model": name, "bound": sizes[0], "golomb": sizes[1],
                            "zlib": sizes[2], "lzma": sizes[3]})
        print(f"| {name} | {sizes[0]:,.0f} | {sizes[1]:,.0f} ({sizes[1] / sizes[0]:.3f}) | "
              f"{sizes[2]:,.0f} ({sizes[2] / sizes[0]:.3f}) | "
              f"{sizes[3]:,.0f} ({sizes[3] / sizes[0]:.3f}) |")
    print("\n| cubic 90%, values | packed | zlib (a byte a code) | lzma | order-0 entropy |\n"
          "|---|---:|---:|---:|---:|")
    for bits in BITS:
        sizes = np.zeros(4)
        for layer in cubic.to_sparse(bits=bits).layers:
            codes = np.concatenate([layer.codes, layer.bias_codes])
            counts = np.bincount(codes)
            p = counts[counts > 0] / codes.size
            sizes += [len(coding.pack_codes(codes, bits)), len(coding.compress(codes.tobytes(), "zlib")),
                      len(coding.compress(codes.tobytes(), "lzma")),
                      -(counts[counts > 0] * np.log2(p)).sum() / 8]
        out["values"].append({"bits": bits, "packed": sizes[0], "zlib": sizes[1],
                              "lzma": sizes[2], "entropy": sizes[3]})
        print(f"| {bits} bits | {sizes[0]:,.0f} | {sizes[1]:,.0f} | {sizes[2]:,.0f} | "
              f"{sizes[3]:,.0f} |")
    return out


def timing(args):
    rng = np.random.default_rng(0)
    n = 4096
    mask = rng.random((n, n)) >= 0.9
    W = (rng.standard_normal((n, n)) * mask).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    layer = spp.SparseLinear(sp.csc_array(W), b, backend="sparse")
    layers = {"csr": layer, "q8": spp.QuantizedLinear.from_layer(layer, 8),
              "q4": spp.QuantizedLinear.from_layer(layer, 4)}
    result = {"layer": {}, "model": {}, "matvec": []}
    for batch in (1, 64, 256):
        x = ops.aligned_empty((n, batch), np.float32)
        x[...] = rng.standard_normal((n, batch))
        outs = {k: ops.aligned_empty((n, batch), np.float32) for k in layers}
        calls = {k: (lambda l=l, o=outs[k], x=x: l.forward_fm(x, o, IDENTITY)) for k, l in layers.items()}
        runs = [measure(calls, args.budget) for _ in range(args.repeats)]
        result["layer"][batch] = runs
        med = {k: float(np.median([r[k] for r in runs])) for k in calls}
        spread = {k: (min(r[k] for r in runs), max(r[k] for r in runs)) for k in calls}
        print(f"4096^2 at 90%, batch {batch}: " + ", ".join(
            f"{k} {1e3 * med[k]:.3f} ms [{1e3 * spread[k][0]:.3f}-{1e3 * spread[k][1]:.3f}]"
            for k in calls) + f"; q8 {med['csr'] / med['q8']:.2f}x, q4 "
            f"{med['csr'] / med['q4']:.2f}x the float CSR layer")
    data, _, _, cubic, _ = demo_models(args.seed)
    Xt = data[2]
    models = {"float32": cubic.to_sparse(), "q8": cubic.to_sparse(bits=8)}
    for batch in (1, 64, Xt.shape[0]):
        Xb = np.ascontiguousarray(Xt[:batch])
        calls = {k: (lambda m=m, Xb=Xb: m.predict_proba(Xb)) for k, m in models.items()}
        runs = [measure(calls, args.budget) for _ in range(args.repeats)]
        result["model"][batch] = runs
        med = {k: float(np.median([r[k] for r in runs])) for k in calls}
        print(f"digits 90% model, predict_proba, batch {batch}: float32 "
              f"{1e3 * med['float32']:.3f} ms, 8 bits {1e3 * med['q8']:.3f} ms")
    for nnz in (1 << 15, 1 << 16, 1 << 17, 1 << 18, 1 << 19):
        side = int(math.sqrt(nnz / 0.1))
        Wn = sp.random(side, side, density=nnz / side**2, random_state=rng, format="csc",
                       dtype=np.float32)
        q = spp.QuantizedLinear(Wn, bits=8)
        x = rng.standard_normal((side, 1)).astype(np.float32)
        y = np.empty((side, 1), np.float32)

        def path(limit, q=q, x=x, y=y):
            """forward_fm at batch 1 with the serial/parallel crossover set to ``limit``."""
            def call():
                saved = quantized_ops.PARALLEL_MATVEC_NNZ
                quantized_ops.PARALLEL_MATVEC_NNZ = limit
                try:
                    q.forward_fm(x, y, IDENTITY)
                finally:
                    quantized_ops.PARALLEL_MATVEC_NNZ = saved
            return call

        calls = {"serial": path(1 << 62), "parallel": path(0)}
        runs = [measure(calls, args.budget) for _ in range(args.repeats)]
        med = {k: float(np.median([r[k] for r in runs])) for k in calls}
        result["matvec"].append({"nnz": q.nnz, **med})
        print(f"batch-1 quantized kernel, {q.nnz:,} nonzeros: serial {1e6 * med['serial']:.1f} "
              f"us, parallel {1e6 * med['parallel']:.1f} us")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--codes", action="store_true")
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=1.0)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.timing:
        result, name = timing(args), "timing.json"
    elif args.codes:
        result, name = codes_compared(args), "codes.json"
    else:
        result, name = accuracy_and_files(args), "results.json"
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, name), "w") as f:
            json.dump(result, f, indent=1)
    print(f"\n{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
