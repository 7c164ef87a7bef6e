"""Files: save/load round trips, atomic writes, and the size a pruned model takes."""

import os
import stat
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import sparseprune as spp
from helpers import random_model, random_problem, tol

DEPTHS = {"no-hidden": [7, 3], "one-hidden": [7, 12, 4], "three-hidden": [7, 12, 9, 6, 5]}


def sparse_model(sizes, dtype, sparsity=0.7, seed=0, empty_layer=None):
    model = random_model(sizes, dtype, seed)
    spp.prune.magnitude(model, sparsity)
    if empty_layer is not None:
        layer = model.layers[empty_layer]
        layer.mask = np.zeros(layer.shape, bool)
    return model, model.to_sparse(backend="sparse")


def assert_same_model(loaded, smodel):
    assert type(loaded) is spp.SparseMLP
    assert loaded.sizes == smodel.sizes and loaded.dtype == smodel.dtype
    for a, b in zip(loaded.layers, smodel.layers):
        assert a.shape == b.shape and a.dtype == b.dtype
        for x, y in zip(a.csr_arrays(), b.csr_arrays()):
            assert x.dtype == y.dtype and x.flags.c_contiguous
            assert_array_equal(x, y)
        assert_array_equal(a.bias, b.bias)
        assert a.bias.dtype == b.bias.dtype
        assert (a.weight != b.weight).nnz == 0


@pytest.mark.parametrize("empty_layer", [None, 0, -1], ids=["pruned", "first-empty", "last-empty"])
@pytest.mark.parametrize("sizes", DEPTHS.values(), ids=DEPTHS.keys())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip(tmp_path, dtype, sizes, empty_layer):
    model, smodel = sparse_model(sizes, dtype, empty_layer=empty_layer)
    path = tmp_path / "model.npz"
    assert smodel.save(path) == str(path)
    loaded = spp.load(path)
    assert_same_model(loaded, smodel)
    if empty_layer is not None:
        assert loaded.layers[empty_layer].nnz == 0
    # The loaded model predicts exactly what the saved one did, backend for backend.
    X, y = random_problem(33, sizes[0], sizes[-1], 2)
    for backend in ("sparse", "dense"):
        for layer in (*loaded.layers, *smodel.layers):
            layer.backend = backend
        assert_array_equal(loaded.predict_proba(X), smodel.predict_proba(X))
        assert_array_equal(loaded.predict(X), smodel.predict(X))
        assert loaded.score(X, y) == smodel.score(X, y)
    # ... and, to rounding, what the masked model predicts.
    assert_allclose(loaded.predict_proba(X), model.predict_proba(X), **tol(dtype, scale=10))
    assert loaded.count_parameters() == model.count_parameters()


def test_round_trip_with_str_path_and_overwrite(tmp_path):
    _, first = sparse_model([5, 4, 3], np.float32, seed=1)
    _, second = sparse_model([6, 3], np.float64, seed=2)
    path = str(tmp_path / "model.npz")
    first.save(path)
    assert_same_model(spp.load(path), first)
    second.save(path)  # overwrites in place
    assert_same_model(spp.load(path), second)
    assert os.listdir(tmp_path) == ["model.npz"]


def test_file_is_a_plain_npz_without_pickles(tmp_path):
    """The documented format: readable by numpy with allow_pickle=False, version 1,
    index arrays in the smallest unsigned type."""
    _, smodel = sparse_model([300, 20, 3], np.float32)
    path = tmp_path / "model.npz"
    smodel.save(path)
    with zipfile.ZipFile(path) as z:
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in z.infolist())
    with np.load(path, allow_pickle=False) as npz:
        assert str(npz["format"]) == "sparseprune" and npz["version"].tolist() == [1]
        assert str(npz["dtype"]) == "float32" and npz["sizes"].tolist() == [300, 20, 3]
        assert sorted(npz.files) == sorted(
            ["format", "version", "dtype", "sizes", "activation", "loss"]
            + [f"layer{i}_{k}" for i in range(2) for k in ("indptr", "indices", "data", "bias")])
        assert str(npz["activation"]) == "relu" and str(npz["loss"]) == "softmax"
        assert npz["layer0_indices"].dtype == np.uint16  # inputs up to 299
        assert npz["layer1_indices"].dtype == np.uint8
        assert npz["layer1_indptr"].dtype == np.uint8


def test_saved_file_permissions_follow_the_umask(tmp_path):
    """A model file is a document: other users may read it if the umask lets them, as
    with any file numpy or open() creates (the temp file behind the atomic write is
    created 0600 and must not pass that on)."""
    _, smodel = sparse_model([5, 3], np.float32)
    old = os.umask(0o022)
    try:
        smodel.save(tmp_path / "model.npz")
        with open(tmp_path / "reference.npz", "wb"):
            pass
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "model.npz").st_mode)
    expected = stat.S_IMODE(os.stat(tmp_path / "reference.npz").st_mode)
    assert oct(mode) == oct(expected)


# -- atomic writes ----------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    """(directory, path, bytes, smodel): a model saved at path, and another to save."""
    _, old = sparse_model([5, 4, 3], np.float32, seed=1)
    path = tmp_path / "model.npz"
    old.save(path)
    _, new = sparse_model([5, 6, 3], np.float32, seed=2)
    return tmp_path, path, path.read_bytes(), new


def half_written_savez(monkeypatch, exc):
    """Make np.savez_compressed write a real, partial zip stream and then fail."""
    real = np.savez_compressed

    def failing(file, *args, **kwargs):
        real(file, *args, **kwargs)
        file.seek(file.tell() // 2)
        file.truncate()
        raise exc

    monkeypatch.setattr(np, "savez_compressed", failing)


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "interrupt"])
def test_failed_save_keeps_the_old_file(saved, monkeypatch, exc):
    directory, path, before, new = saved
    half_written_savez(monkeypatch, exc)
    with pytest.raises(type(exc)):
        new.save(path)
    assert path.read_bytes() == before
    assert os.listdir(directory) == ["model.npz"]  # no temporary file left behind
    monkeypatch.undo()
    assert spp.load(path).sizes == (5, 4, 3)


def test_failed_rename_keeps_the_old_file(saved, monkeypatch):
    directory, path, before, new = saved
    calls = []

    def failing_replace(src, dst):
        calls.append((src, dst))
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        new.save(path)
    assert len(calls) == 1 and os.fspath(calls[0][1]) == str(path)
    assert os.path.dirname(calls[0][0]) == str(directory)  # the temp file sat beside it
    assert path.read_bytes() == before
    assert os.listdir(directory) == ["model.npz"]


def test_failed_save_to_a_new_path_leaves_nothing(tmp_path, monkeypatch):
    _, smodel = sparse_model([5, 3], np.float32)
    half_written_savez(monkeypatch, OSError(5, "Input/output error"))
    with pytest.raises(OSError):
        smodel.save(tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


def test_save_into_a_missing_directory(tmp_path):
    _, smodel = sparse_model([5, 3], np.float32)
    with pytest.raises(FileNotFoundError):
        smodel.save(tmp_path / "missing" / "model.npz")
    assert os.listdir(tmp_path) == []


def test_save_over_a_directory_keeps_it(tmp_path):
    _, smodel = sparse_model([5, 3], np.float32)
    (tmp_path / "model.npz").mkdir()
    with pytest.raises(OSError):
        smodel.save(tmp_path / "model.npz")
    assert os.listdir(tmp_path) == ["model.npz"] and (tmp_path / "model.npz").is_dir()


# -- size on disk -----------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[64, 256, 128, 10], [1024, 1024, 10]],
                         ids=["64-256-128-10", "1024-1024-10"])
def test_a_90_percent_sparse_file_is_at_most_a_fifth_of_dense(tmp_path, sizes):
    """Dense float32 weights and biases take 4 bytes a parameter; at 90% sparsity the
    file (values, compressed small indices, biases) must take at most a fifth of that."""
    model = spp.MLP(sizes, dtype="float32", seed=0)
    spp.prune.magnitude(model, 0.9)
    path = tmp_path / "model.npz"
    model.to_sparse(backend="sparse").save(path)
    total, active = model.count_parameters()
    ratio = os.path.getsize(path) / (4 * total)
    assert ratio <= 0.2, f"{sizes}: file is {ratio:.3f} of the dense float32 size"
    # Sanity: it cannot be smaller than the live float32 values it must hold.
    assert os.path.getsize(path) >= 4 * (active - sum(sizes[1:])) * 0.9
