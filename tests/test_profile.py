"""``sparseprune profile``: the pure pieces on hand-made input, then tiny real runs."""

import json
import math
import sys


import numpy as np
import pytest

import sparseprune as spp
from sparseprune.app import profile as prof
from sparseprune.app.cli import main

TINY = {"shapes": [(32, 24)], "sparsities": (0, 0.5, 0.9), "batches": (1, 5), "budget": 0.001,
        "progress": False}
TINY_ARGS = ["--shapes", "32x24", "--batch", "1", "5", "--sparsity", "0", "0.5", "0.9",
             "--budget", "0.001", "--no-progress"]
ROW_TYPES = {
    "case": str, "shape": list, "sparsity": float, "batch": int, "dtype": str, "itemsize": int,
    "dense_s": float, "sparse_s": float, "scipy_s": float, "quantized_s": float,
    "speedup": float, "speedup_scipy": float, "speedup_quantized": float, "dense_bytes": int,
    "sparse_bytes": int, "quantized_bytes": int,
    "mask_entropy_bytes": float, "entropy_bound_bytes": float, "nnz": int, "gflops": float,
}


# -- pure logic --------------------------------------------------------------------------

def _row(case, sparsity, batch, speedup):
    return {"case": case, "sparsity": sparsity, "batch": batch, "speedup": speedup}


def test_crossover_never_always_and_non_monotone():
    rows = [
        # never: CSR loses at every sparsity (and exactly 1x is not a win)
        _row("a", 0.0, 1, 0.2), _row("a", 0.5, 1, 0.5), _row("a", 0.9, 1, 1.0),
        # always: wins from the lowest sparsity on
        _row("a", 0.0, 64, 1.1), _row("a", 0.5, 64, 2.0), _row("a", 0.9, 64, 5.0),
        # non-monotone, listed out of order: wins at 0.5, loses at 0.7, wins again at 0.9
        _row("a", 0.9, 256, 3.0), _row("a", 0.7, 256, 0.9), _row("a", 0.5, 256, 1.2),
        _row("a", 0.0, 256, 0.3),
        # another case is kept apart
        _row("b", 0.0, 1, 0.1), _row("b", 0.99, 1, 4.0),
    ]
    assert prof.crossover_by_case(rows) == {
        "a": {"1": None, "64": 0.0, "256": 0.5},
        "b": {"1": 0.99},
    }
    # Per batch over all cases: "a" never wins at batch 1, "b" does at 0.99.
    assert prof.crossover(rows) == {"1": 0.99, "64": 0.0, "256": 0.5}
    assert prof.crossover_by_case([]) == {} and prof.crossover([]) == {}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_byte_counts_are_the_arrays_own_nbytes(dtype):
    (_, _, [layer]), = prof.synthetic_cases([(32, 24)], [0.7], np.dtype(dtype))
    indptr, indices, data = layer.sparse.csr_arrays()
    nb = layer.nbytes
    assert nb["dense_bytes"] == layer.dense.nbytes == 32 * 24 * np.dtype(dtype).itemsize
    # 32 inputs: the layer stores its column indices as uint16.
    assert nb["sparse_bytes"] == indptr.nbytes + indices.size * 2 + data.nbytes
    assert nb["sparse_bytes"] == layer.sparse.nbytes()
    assert layer.nnz == data.size == round(0.3 * 32 * 24)
    assert nb["mask_entropy_bytes"] == pytest.approx(
        math.log2(math.comb(32 * 24, layer.nnz)) / 8)
    assert nb["entropy_bound_bytes"] == pytest.approx(
        nb["mask_entropy_bytes"] + layer.nnz * np.dtype(dtype).itemsize)
    # The entropy bound can never exceed what the dense array or CSR spends.
    assert nb["entropy_bound_bytes"] <= min(nb["dense_bytes"], nb["sparse_bytes"])


def test_synthetic_layers_keep_the_largest_weights():
    cases = list(prof.synthetic_cases([(32, 24)], [0.0, 0.9], np.dtype("float32"), seed=3))
    full, pruned = cases[0][2][0].dense, cases[1][2][0].dense
    kept = pruned != 0
    assert np.count_nonzero(full) == full.size
    assert np.array_equal(pruned[kept], full[kept])
    assert np.abs(full[kept]).min() >= np.abs(full[~kept]).max()


# -- measuring ---------------------------------------------------------------------------

def test_contenders_compute_the_same_thing(rng):
    (_, _, layers), = prof.synthetic_cases([(32, 24)], [0.5], np.dtype("float64"))
    X = rng.standard_normal((5, 32))
    calls = prof._chain(layers, X)
    dense = calls["dense"]()
    np.testing.assert_allclose(dense, X @ layers[0].dense + layers[0].bias)
    np.testing.assert_allclose(calls["sparse"](), dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(calls["scipy"](), dense, rtol=1e-12, atol=1e-12)
    # The kernel layout: feature-major in and out.
    kernel = prof._chain(layers, X, "kernel")
    np.testing.assert_allclose(kernel["sparse"]().T, dense, rtol=1e-12, atol=1e-12)
    quantized = layers[0].quantized
    assert quantized.bits == prof.QUANTIZED_BITS
    np.testing.assert_allclose(calls["quantized"](), X @ quantized.to_dense() + quantized.bias,
                               rtol=1e-12, atol=1e-12)
    # Within half a step of each weight and bias: the error of the 8-bit layer's output.
    half = float(quantized.step) / 2
    np.testing.assert_allclose(calls["quantized"](), dense,
                               atol=half * (np.abs(X).sum(axis=1).max() + 1))
    np.testing.assert_allclose(kernel["quantized"]().T, calls["quantized"](), rtol=1e-12,
                               atol=1e-12)


def test_model_chain_matches_the_model(rng, tmp_path):
    model = spp.MLP([20, 16, 5], dtype="float64", seed=0)
    spp.prune.magnitude(model, 0.5)
    smodel = model.to_sparse()
    *_, (case, sparsity, layers) = prof.model_cases(smodel, [0.0], np.dtype("float64"))
    assert case == "model" and sparsity == pytest.approx(model.sparsity)
    X = rng.standard_normal((7, 20))
    calls = prof._chain(layers, X)
    dense = calls["dense"]()
    hidden = np.maximum(X @ model.layers[0].weight + model.layers[0].bias, 0)
    np.testing.assert_allclose(dense, hidden @ model.layers[1].weight + model.layers[1].bias)
    np.testing.assert_allclose(calls["sparse"](), dense, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(prof._chain(layers, X, "kernel")["sparse"]().T, dense,
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(calls["scipy"](), dense, rtol=1e-10, atol=1e-12)


def test_run_tiny_grid_schema(tmp_path):
    result = prof.run(**TINY)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(result, allow_nan=False))
    doc = json.loads(path.read_text())
    assert set(doc) == {"machine", "rows", "crossover", "crossover_by_case", "layout"}
    assert doc["layout"] == "public"
    machine = doc["machine"]
    for key in ("cpu_count", "platform", "python", "numpy", "scipy", "numba", "blas"):
        assert key in machine
    assert machine["numpy"] == np.__version__
    assert isinstance(machine["blas"], list)
    rows = doc["rows"]
    assert len(rows) == 3 * 2
    assert {(r["sparsity"], r["batch"]) for r in rows} == {
        (s, b) for s in (0.0, 0.5, 0.9) for b in (1, 5)}
    for row in rows:
        assert set(row) == set(ROW_TYPES)
        for key, kind in ROW_TYPES.items():
            assert isinstance(row[key], kind), (key, row[key])
        assert row["shape"] == [32, 24] and row["dtype"] == "float32" and row["itemsize"] == 4
        assert row["speedup"] == pytest.approx(row["dense_s"] / row["sparse_s"])
        assert row["speedup_quantized"] == pytest.approx(row["sparse_s"] / row["quantized_s"])
        assert row["gflops"] == pytest.approx(2 * row["nnz"] * row["batch"] / row["sparse_s"] / 1e9)
        assert row["dense_bytes"] == 32 * 24 * 4
        assert min(row["dense_s"], row["sparse_s"], row["scipy_s"], row["quantized_s"]) > 0
        # 8-bit codes and uint16 indices: 3 bytes a nonzero, then indptr, bias codes and
        # the 256-entry table.
        assert row["quantized_bytes"] == 3 * row["nnz"] + 25 * 4 + 24 + 256 * 4 + 8
    assert set(doc["crossover_by_case"]) == {"32x24"}
    assert set(doc["crossover_by_case"]["32x24"]) == {"1", "5"}
    assert doc["crossover_by_case"] == prof.crossover_by_case(rows)
    assert doc["crossover"] == prof.crossover(rows) and set(doc["crossover"]) == {"1", "5"}


def test_run_rejects_bad_grids():
    with pytest.raises(ValueError, match="sparsities"):
        prof.run(**dict(TINY, sparsities=(0.5, 1.0)))
    with pytest.raises(ValueError, match="batches"):
        prof.run(**dict(TINY, batches=(0,)))


# -- the command -------------------------------------------------------------------------

def test_cli_profile_writes_json_and_plots(tmp_path, capsys):
    assert main(["profile", "--quick", "--out", str(tmp_path)] + TINY_ARGS) == 0
    out, err = capsys.readouterr()
    assert err == ""  # --no-progress
    for text in ["synthetic layers: 32x24", "vs dense", "q8 ms", "q8 vs csr", "q8 KiB",
                 "crossover", "profile.json", "speedup.png", "bytes.png"]:
        assert text in out
    assert out.count("32x24") >= 1 + 6 + 1  # header, six rows, crossover table
    doc = json.loads((tmp_path / "profile.json").read_text())
    assert len(doc["rows"]) == 6
    for name in ("speedup.png", "bytes.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_profile_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    assert main(["profile", "--out", str(tmp_path)] + TINY_ARGS) == 0
    out, _ = capsys.readouterr()
    assert "no plots" in out and "matplotlib" in out
    assert (tmp_path / "profile.json").exists()
    assert not (tmp_path / "speedup.png").exists()


def test_cli_profile_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["profile", "--shapes", "32by24"])
    assert "INxOUT" in capsys.readouterr().err
    assert main(["profile", "--out", str(tmp_path)] + TINY_ARGS + ["--sparsity", "1"]) == 2
    assert "sparsities must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "profile.json").exists()


def test_cli_profile_unreadable_model(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    assert main(["profile", str(bad), "--out", str(tmp_path / "out")] + TINY_ARGS) == 2
    assert "not a readable .npz file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_profile_saved_model(tmp_path, capsys):
    model = spp.MLP([20, 16, 5], seed=0)
    spp.prune.magnitude(model, 0.5, scope="layer")
    smodel = model.to_sparse()
    path = smodel.save(tmp_path / "model.npz")
    own = [layer.nnz for layer in smodel.layers]
    out_dir = tmp_path / "out"
    assert main(["profile", str(path), "--batch", "1", "5", "--sparsity", "0", "0.5", "0.9",
                 "--budget", "0.001", "--no-progress", "--out", str(out_dir)]) == 0
    out, _ = capsys.readouterr()
    assert "sizes [20, 16, 5]" in out
    doc = json.loads((out_dir / "profile.json").read_text())
    rows = doc["rows"]
    cases = {r["case"] for r in rows}
    assert cases == {"layer0 20x16", "layer1 16x5", "model"}
    assert set(doc["crossover_by_case"]) == cases
    for i, case in enumerate(["layer0 20x16", "layer1 16x5"]):
        layer_rows = [r for r in rows if r["case"] == case]
        # Sparsity 0 and 0.5 collapse onto the layer's own 50%: two cases, two batches.
        assert sorted({r["nnz"] for r in layer_rows}) == [round(0.1 * own[i] * 2), own[i]]
        assert len(layer_rows) == 2 * 2
        assert min(r["sparsity"] for r in layer_rows) == pytest.approx(0.5)
    model_rows = [r for r in rows if r["case"] == "model"]
    assert {r["nnz"] for r in model_rows} == {sum(own), sum(round(0.1 * n) for n in (320, 80))}
    assert all(r["shape"] == [20, 5] for r in model_rows)
    full = next(r for r in model_rows if r["nnz"] == sum(own))
    assert full["dense_bytes"] == (20 * 16 + 16 * 5) * 4
    assert full["sparse_bytes"] == sum(layer.nbytes() for layer in smodel.layers)
    assert full["quantized_bytes"] == sum(layer.nbytes() for layer in smodel.quantize(8).layers)
    assert (out_dir / "speedup.png").exists() and (out_dir / "bytes.png").exists()
