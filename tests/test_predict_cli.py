"""``sparseprune predict``: every input format and both outputs against the model on the
whole array and the NumPy reference, chunk sizes that do and do not divide the rows,
the progress bar on stderr; bad input gets a clear error, exit code 2, and nothing
written (no output, no temporary file, an existing output untouched). The same run
through a Dask cluster is in test_dask.py, beside its cluster."""

import os

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import reference as ref
import sparseprune as spp
from helpers import random_model, tol
from sparseprune.app import predict as scoring
from sparseprune.app.cli import main

N_FEATURES = 12


@pytest.fixture(scope="module", params=["float32", "float64"])
def saved(request, tmp_path_factory):
    """(path, SparseMLP, MLP) of a 12-32-4 model, 60% pruned, saved."""
    model = random_model([N_FEATURES, 32, 4], request.param, seed=1)
    spp.prune.magnitude(model, 0.6)
    path = tmp_path_factory.mktemp("model") / "model.npz"
    smodel = model.to_sparse()
    smodel.save(path)
    return path, spp.load(path), model


def data(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, N_FEATURES))


def expected_proba(model, X):
    return ref.predict_proba([layer.to_dense() for layer in model.layers],
                             [layer.bias for layer in model.layers], X)


def run(*args):
    return main(["predict", *map(str, args), "--no-progress"])


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def write_csv(path, X, header=False, blank_lines=False):
    lines = [",".join(repr(float(v)) for v in row) for row in X]
    if blank_lines:
        lines = [line + "\n" for line in lines]
    if header:
        lines.insert(0, ",".join(f"feature {i}" for i in range(X.shape[1])))
    path.write_text("\n".join(lines) + "\n")
    return path


INPUTS = {
    "npy": lambda p, X: np.save(p / "x.npy", X.astype(np.float32)) or p / "x.npy",
    "npy fortran": lambda p, X: np.save(p / "x.npy", np.asfortranarray(X)) or p / "x.npy",
    "npy int": lambda p, X: np.save(p / "x.npy", np.round(X * 10).astype(np.int16))
    or p / "x.npy",
    "npz named": lambda p, X: np.savez(p / "x.npz", other=X[:2], X=X) or p / "x.npz",
    "npz compressed": lambda p, X: np.savez_compressed(p / "x.npz", X) or p / "x.npz",
    "npz fortran": lambda p, X: np.savez(p / "x.npz", np.asfortranarray(X)) or p / "x.npz",
    "csv": lambda p, X: write_csv(p / "x.csv", X),
    "csv header": lambda p, X: write_csv(p / "x.csv", X, header=True, blank_lines=True),
}


def loaded(path):
    """The input as the model sees it: what the file holds."""
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".npz":
        with np.load(path) as npz:
            return npz["X"] if "X" in npz.files else npz[npz.files[0]]
    return np.loadtxt(path, delimiter=",", skiprows=int(path.read_text()[0].isalpha()))


@pytest.mark.parametrize("batch", [1, 7, 100, 5000])
@pytest.mark.parametrize("kind", INPUTS)
def test_every_input_scores_like_the_whole_array(saved, tmp_path, kind, batch):
    path, smodel, model = saved
    X = loaded(INPUTS[kind](tmp_path, data(100)))
    assert run(path, tmp_path / ("x." + kind.split()[0]), "--out", tmp_path / "labels.npy",
               "--batch-size", batch) == 0
    labels = np.load(tmp_path / "labels.npy")
    assert labels.dtype == np.int64 and labels.shape == (100,)
    assert_array_equal(labels, smodel.predict(X))
    assert run(path, tmp_path / ("x." + kind.split()[0]), "--out", tmp_path / "proba.npy",
               "--proba", "--batch-size", batch) == 0
    proba = np.load(tmp_path / "proba.npy")
    assert proba.dtype == smodel.dtype and proba.shape == (100, 4)
    np.testing.assert_allclose(proba, smodel.predict_proba(X), **tol(smodel.dtype))
    np.testing.assert_allclose(proba, expected_proba(model, X), **tol(smodel.dtype))
    assert leftovers(tmp_path) == []


def test_csv_output_holds_the_answers(saved, tmp_path):
    path, smodel, _ = saved
    X = data(50)
    np.save(tmp_path / "x.npy", X)
    assert run(path, tmp_path / "x.npy", "--out", tmp_path / "p.csv", "--proba",
               "--batch-size", 8) == 0
    proba = np.loadtxt(tmp_path / "p.csv", delimiter=",", dtype=smodel.dtype)
    np.testing.assert_allclose(proba, smodel.predict_proba(X), **tol(smodel.dtype))
    assert run(path, tmp_path / "x.npy", "--out", tmp_path / "l.csv") == 0
    assert_array_equal(np.loadtxt(tmp_path / "l.csv", dtype=np.int64), smodel.predict(X))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_csv_values_read_back_exactly(tmp_path, dtype):
    """9 significant digits for float32 and 17 for float64 are enough to read every
    value back exactly, tiny, huge and negative ones too."""
    rng = np.random.default_rng(4)
    values = (rng.standard_normal((40, 3)) * 10.0 ** rng.integers(-30, 30, (40, 3)))
    block = values.astype(dtype) if dtype != "int64" else rng.integers(-2**62, 2**62, 40)
    with open(tmp_path / "v.csv", "wb") as f:
        scoring._CsvOutput(f, len(block), block.shape[1:], block.dtype).write(block)
    assert_array_equal(np.loadtxt(tmp_path / "v.csv", delimiter=",", dtype=dtype), block)


def test_an_empty_input_gives_an_empty_output(saved, tmp_path):
    path, smodel, _ = saved
    np.save(tmp_path / "x.npy", np.empty((0, N_FEATURES)))
    assert run(path, tmp_path / "x.npy", "--out", tmp_path / "p.npy", "--proba") == 0
    proba = np.load(tmp_path / "p.npy")
    assert proba.shape == (0, 4) and proba.dtype == smodel.dtype
    (tmp_path / "x.csv").write_text("a,b,c,d,e,f,g,h,i,j,k,l\n")
    assert run(path, tmp_path / "x.csv", "--out", tmp_path / "l.npy") == 0
    assert np.load(tmp_path / "l.npy").shape == (0,)


def test_the_progress_bar_goes_to_stderr_and_the_summary_to_stdout(saved, tmp_path, capsys):
    path, _, _ = saved
    np.save(tmp_path / "x.npy", data(30))
    assert main(["predict", str(path), str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "l.npy"), "--batch-size", "10"]) == 0
    out, err = capsys.readouterr()
    assert "30/30" in err and "rows" in err
    assert out.startswith(f"wrote {tmp_path / 'l.npy'}: 30 int64, 30 rows in ")
    assert "local" in out


def resident_file_bytes():
    """Bytes of mapped files resident in this process (Linux's RssFile)."""
    with open("/proc/self/status") as f:
        (line,) = [line for line in f if line.startswith("RssFile:")]
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's /proc")
def test_a_memory_mapped_input_never_becomes_resident_whole(tmp_path):
    """A mapped page counts as resident until it is released: the reader releases each
    chunk's pages once it has copied them out, so reading a 64 MiB file in 1 MiB chunks
    leaves about a chunk of it resident, not the file."""
    n_rows = 64 * 2**20 // (8 * N_FEATURES)
    np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float64, (n_rows, N_FEATURES))[:] = 1
    reader = scoring.open_input(tmp_path / "x.npy", N_FEATURES)
    before = resident_file_bytes()
    peak, rows = 0, 0
    for chunk in reader.chunks(2**20 // (8 * N_FEATURES)):
        rows += chunk.shape[0]
        assert (chunk == 1).all()
        peak = max(peak, resident_file_bytes() - before)
    reader.close()
    assert rows == n_rows
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB of the 64 MiB input became resident"


# -- bad input -----------------------------------------------------------------------------


def refused(capsys, directory, *args, match):
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparseprune predict: ") and match in err, err
    assert leftovers(directory) == []


def test_bad_input_is_refused_and_nothing_is_written(saved, tmp_path, capsys):
    path, _, _ = saved
    out = tmp_path / "out.npy"
    np.save(tmp_path / "narrow.npy", data(5)[:, :5])
    refused(capsys, tmp_path, path, tmp_path / "narrow.npy", "--out", out,
            match="narrow.npy has 5 features per sample, the model expects 12")
    np.save(tmp_path / "text.npy", np.full((3, N_FEATURES), "x"))
    refused(capsys, tmp_path, path, tmp_path / "text.npy", "--out", out,
            match="text.npy must be a 2-D numeric array, got dtype <U1")
    np.save(tmp_path / "flat.npy", np.zeros(N_FEATURES))
    refused(capsys, tmp_path, path, tmp_path / "flat.npy", "--out", out,
            match="flat.npy must be 2-D (n_samples, n_features), got shape (12,)")
    (tmp_path / "junk.npy").write_bytes(b"not an array at all")
    refused(capsys, tmp_path, path, tmp_path / "junk.npy", "--out", out,
            match="junk.npy: not a readable .npy array")
    np.save(tmp_path / "cut.npy", data(10))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:-100])
    refused(capsys, tmp_path, path, tmp_path / "cut.npy", "--out", out,
            match="cut.npy: truncated")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    refused(capsys, tmp_path, path, tmp_path / "junk.npz", "--out", out,
            match="junk.npz: not a readable .npz archive")
    np.savez(tmp_path / "two.npz", a=data(2), b=data(2))
    refused(capsys, tmp_path, path, tmp_path / "two.npz", "--out", out,
            match="two.npz: holds arrays ['a', 'b']; expected one array, or one named 'X'")
    (tmp_path / "x.csv").write_text("1,2,3,4,5,6,7,8,9,10,11,12\n1,2,3,x,5,6,7,8,9,10,11,12\n")
    refused(capsys, tmp_path, path, tmp_path / "x.csv", "--out", out,
            match="x.csv line 2: expected 12 comma-separated numbers, got '1,2,3,x,")
    (tmp_path / "short.csv").write_text("1,2,3,4,5,6,7,8,9,10,11,12\n1,2,3\n")
    refused(capsys, tmp_path, path, tmp_path / "short.csv", "--out", out,
            match="short.csv line 2: expected 12 comma-separated numbers, got '1,2,3'")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81")
    refused(capsys, tmp_path, path, tmp_path / "bin.csv", "--out", out,
            match="bin.csv: not a text file")
    (tmp_path / "empty.csv").write_text("\n\n")
    refused(capsys, tmp_path, path, tmp_path / "empty.csv", "--out", out,
            match="empty.csv: holds no rows, not even a header")
    refused(capsys, tmp_path, path, tmp_path / "missing.npy", "--out", out,
            match="INPUT '" + str(tmp_path / "missing.npy") + "' does not exist")
    refused(capsys, tmp_path, path, tmp_path / "x.txt", "--out", out,
            match="INPUT must end in .npy or .npz or .csv")
    refused(capsys, tmp_path, tmp_path / "narrow.npy", tmp_path / "narrow.npy", "--out", out,
            match="narrow.npy: not an .npz archive")
    (tmp_path / "narrow.csv").write_text("1,2,3,4,5\n6,7,8,9,10\n")
    refused(capsys, tmp_path, path, tmp_path / "narrow.csv", "--out", out,
            match="narrow.csv has 5 features per sample, the model expects 12")
    np.savez(tmp_path / "narrow.npz", X=data(5)[:, :5])
    refused(capsys, tmp_path, path, tmp_path / "narrow.npz", "--out", out,
            match="narrow.npz[X] has 5 features per sample, the model expects 12")
    # Damaged members of a compressed archive: a corrupt stream, a broken member header.
    np.savez_compressed(tmp_path / "good.npz", X=data(400))
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "stream.npz").write_bytes(raw[:40] + bytes(20) + raw[60:])
    refused(capsys, tmp_path, path, tmp_path / "stream.npz", "--out", out,
            match="stream.npz[X]: not a readable .npy array")
    (tmp_path / "member.npz").write_bytes(b"XXXX" + raw[4:])
    refused(capsys, tmp_path, path, tmp_path / "member.npz", "--out", out,
            match="member.npz[X]: cannot be read")
    assert not out.exists()


def test_nan_in_an_archive_names_its_row(saved, tmp_path, capsys):
    path, _, _ = saved
    X = data(50)
    X[31, 4] = np.nan
    np.savez_compressed(tmp_path / "x.npz", X=X)
    refused(capsys, tmp_path, path, tmp_path / "x.npz", "--out", tmp_path / "out.npy",
            "--batch-size", 8, match="row 31")


def test_a_csv_from_a_spreadsheet_and_string_labels(tmp_path):
    """A byte-order mark before the first number is not data; labels that are strings
    (a model's ``classes``) are written to .csv as they are."""
    smodel = spp.MLP([3, 8, 3], seed=2, classes=["cat", "dog", "eel"]).to_sparse()
    smodel.save(tmp_path / "model.npz")
    X = np.random.default_rng(0).standard_normal((9, 3))
    (tmp_path / "x.csv").write_text("\n".join(",".join(repr(float(v)) for v in row)
                                              for row in X) + "\n", encoding="utf-8-sig")
    assert run(tmp_path / "model.npz", tmp_path / "x.csv", "--out", tmp_path / "y.csv") == 0
    assert (tmp_path / "y.csv").read_text().split() == list(smodel.predict(X))


def test_a_bad_output_path_is_refused_before_reading(saved, tmp_path, capsys):
    path, _, _ = saved
    np.save(tmp_path / "x.npy", data(5))
    refused(capsys, tmp_path, path, tmp_path / "x.npy", "--out", tmp_path / "no" / "p.npy",
            match=f"--out: directory '{tmp_path / 'no'}' does not exist")
    refused(capsys, tmp_path, path, tmp_path / "x.npy", "--out", tmp_path / "p.parquet",
            match="--out must end in .npy or .csv")
    (tmp_path / "d.npy").mkdir()
    refused(capsys, tmp_path, path, tmp_path / "x.npy", "--out", tmp_path / "d.npy",
            match="is a directory")
    refused(capsys, tmp_path, path, tmp_path / "x.npy", "--out", tmp_path / "p.npy",
            "--batch-size", 0, match="--batch-size must be >= 1, got 0")
    with pytest.raises(ValueError, match="give --scheduler or --workers, not both"):
        scoring.run(path, tmp_path / "x.npy", tmp_path / "p.npy", scheduler="tcp://x:1",
                    workers=2)
    with pytest.raises(SystemExit):  # argparse says so too, before anything runs
        main(["predict", str(path), str(tmp_path / "x.npy"), "--out", "p.npy",
              "--scheduler", "tcp://x:1", "--workers", "2"])
    assert leftovers(tmp_path) == [] and not (tmp_path / "p.npy").exists()


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_nan_deep_in_the_input_names_its_row_and_leaves_the_old_output(saved, tmp_path,
                                                                        capsys, suffix):
    """The NaN sits in the fourth chunk: three chunks were already written to the
    temporary file, which is removed; an output from an earlier run stays as it was."""
    path, _, _ = saved
    X = data(100)
    X[67, 3] = np.nan
    source = tmp_path / f"x{suffix}"
    np.save(source, X) if suffix == ".npy" else write_csv(source, X, header=True)
    out = tmp_path / "out.npy"
    out.write_bytes(b"an earlier run's output")
    refused(capsys, tmp_path, path, source, "--out", out, "--batch-size", 20,
            match=f"x{suffix} row 67 contains NaN or infinity")
    assert out.read_bytes() == b"an earlier run's output"


def test_a_failure_while_writing_removes_the_temporary_file(saved, tmp_path, monkeypatch):
    """Anything that stops the run midway, Ctrl-C included, leaves no temporary file
    and nothing under the output's name."""
    path, _, _ = saved
    np.save(tmp_path / "x.npy", data(100))
    calls = []

    def interrupted(self, block):
        calls.append(len(block))
        if len(calls) == 3:
            raise KeyboardInterrupt
        self._f.write(block.tobytes())

    monkeypatch.setattr(scoring._NpyOutput, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        scoring.run(path, tmp_path / "x.npy", tmp_path / "out.npy", batch_size=10,
                    progress=False)
    assert calls == [10, 10, 10]
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.npy").exists()
