"""``sparseprune demo``: one quick run, its files, and whether its numbers hold up when
recomputed from what it saved."""

import io
import json
import math
import sys

import numpy as np
import pytest

import sparseprune as spp
from fake_results import result, step
from sparseprune.app import demo, report
from sparseprune.app import methods as demo_methods
from sparseprune.app.cli import main

PLOTS = ["accuracy_vs_sparsity.png", "accuracy_vs_active.png", "weight_histograms.png",
         "masks.png", "description_length.png", "methods.png"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``sparseprune demo --quick`` on blobs: (out dir, stdout, stderr, results as
    results.json holds them, the typed result run() returned)."""
    out = tmp_path_factory.mktemp("demo")
    capture = pytest.MonkeyPatch()
    stdout, stderr = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stdout", stdout)
    capture.setattr(sys, "stderr", stderr)
    typed = []
    write = demo.write

    def keep(result, *args, **kwargs):
        typed.append(result)
        return write(result, *args, **kwargs)

    capture.setattr(demo, "write", keep)
    try:
        code = main(["demo", "--quick", "--no-progress", "--out", str(out)])
    finally:
        capture.undo()
    assert code == 0
    return (out, stdout.getvalue(), stderr.getvalue(),
            json.loads((out / "results.json").read_text()), typed[0])


def test_demo_prints_the_story(quick_run):
    _, out, err, _, _ = quick_run
    assert err == ""  # --no-progress: no bars on stderr
    for text in ["data: blobs, 1000 train and 500 test samples", "baseline: test accuracy",
                 "one-shot magnitude 50%", "+ fine-tuned", "linear schedule to 90%",
                 "cubic schedule to 90%", "how far to prune", "MDL prefers step",
                 "prequential", "uniform (no model)", "pruning methods side by side",
                 "lottery ticket, random reinit", "units removed", "as a SparseMLP",
                 "file bits", "its values quantized", "file / model bits", "smallest within",
                 "wrote"]:
        assert text in out


def test_demo_writes_every_file(quick_run):
    out, _, _, _, _ = quick_run
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    for name in PLOTS:
        assert f"]({name})" in text
    for heading in ["## Reading", "## Pruning", "## How far to prune", "## Codes against",
                    "## Pruning methods side by side", "## The pruned model, sparse",
                    "## Sparse and quantized", "## Plots"]:
        assert heading in text
    assert "| step | sparsity |" in text


def test_demo_results_hold_together(quick_run):
    out, _, _, results, _ = quick_run
    n, k = results["data"]["n_train"], results["data"]["n_classes"]
    assert results["codes"]["uniform_bits"] == pytest.approx(n * math.log2(k))
    for steps in results["paths"].values():
        assert len(steps) == 5
        assert steps[-1]["sparsity"] == pytest.approx(results["settings"]["target"], abs=1e-3)
    sweep = results["mdl"]["sweep"]
    assert len(sweep) == results["mdl"]["steps"]
    totals = [s["description_length"]["total_bits"] for s in sweep]
    preferred = results["mdl"]["preferred_step"]
    assert sweep[int(np.argmin(totals))]["step"] == preferred
    assert results["codes"]["two_part_preferred"]["total_bits"] == pytest.approx(min(totals))
    accuracies = [s["val_accuracy"] for s in sweep]
    assert sweep[results["mdl"]["most_accurate_step"] - 1]["val_accuracy"] == max(accuracies)
    for s in sweep:
        code = s["description_length"]
        assert code["total_bits"] == pytest.approx(code["model_bits"] + code["data_bits"])
        assert code["total_bits"] == min(code["candidates"].values())
    methods = results["methods"]
    assert [c["name"] for c in methods["curves"]] == list(demo_methods.METHODS)
    for curve in methods["curves"]:
        # Every method lands on each sparsity of the grid (to the count's rounding).
        assert curve["sparsity"] == pytest.approx(methods["settings"]["sparsities"], abs=2e-3)
        assert all(0 <= a <= 1 for a in curve["test_accuracy"])
    removed = methods["structured"]["sparsity"]
    assert removed == sorted(removed) and 0 < removed[0] and removed[-1] < 1
    bb = results["codes"]["bits_back"]
    assert bb["total_bits"] == min(bb["by_sigma"].values())
    preq = results["codes"]["prequential"]
    assert preq["ends"][-1] == n and preq["block_bits"][0] == pytest.approx(
        preq["ends"][0] * math.log2(k))


def test_demo_saved_model_is_the_pruned_one(quick_run):
    out, _, _, results, _ = quick_run
    sparse = results["sparse"]
    model = spp.load(out / "model.npz")
    assert model.sparsity == pytest.approx(sparse["sparsity"])
    assert model.nbytes() == sparse["sparse_bytes"]
    assert sparse["sparse_file_bytes"] == (out / "model.npz").stat().st_size
    assert sparse["same_predictions"] == 1.0
    # The file's model scores what the cubic path's last step reported.
    X, y, Xt, yt = demo.load("blobs", results["network"]["seed"])
    assert model.score(Xt, yt) == pytest.approx(results["paths"]["cubic"][-1]["val_accuracy"])
    assert [t["batch"] for t in sparse["timing"]] == [1, 64, 500]
    assert all(t["speedup"] > 0 for t in sparse["timing"])


def test_demo_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    # A smaller story: the point is what gets written, not the numbers.
    small = dict(demo.SETUPS["blobs"], sweep=dict(target=0.9, steps=3, epochs=5))
    monkeypatch.setitem(demo.SETUPS, "blobs", small)
    monkeypatch.setattr(demo_methods, "SPARSITIES", (0.5,))
    monkeypatch.setattr(demo_methods, "UNIT_FRACTIONS", (0.5,))
    assert main(["demo", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert "no plots" in out and "matplotlib" in out
    assert (tmp_path / "results.json").exists() and (tmp_path / "model.npz").exists()
    assert not any((tmp_path / name).exists() for name in PLOTS)
    assert "No plots: matplotlib is not installed" in (tmp_path / "report.md").read_text()


def test_demo_rejects_unknown_data(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--data", "mnist"])
    assert "invalid choice" in capsys.readouterr().err


def _fake_results(best_total, uniform, most_accurate=1):
    # Binary labels: the uniform code of `uniform` samples is `uniform` bits.
    sweep = [step(1, 0.5, 0.99, 2 * best_total - 10, 10, n_samples=int(uniform), n_classes=2),
             step(2, 1.0, 0.9 if most_accurate == 1 else 0.995, best_total - 10, 10,
                  n_samples=int(uniform), n_classes=2)]
    return result(sweep, preferred_step=2, most_accurate_step=most_accurate, uniform=uniform)


def test_reading_says_what_the_numbers_mean():
    shorter = report.reading(_fake_results(best_total=500.0, uniform=1000.0))
    assert "2.00x shorter than the uniform code" in shorter
    assert "does not pick the most accurate step" in shorter
    longer = report.reading(_fake_results(best_total=2000.0, uniform=1000.0, most_accurate=2))
    assert "2.00x the uniform code" in longer and "no network of this size" in longer
    assert "also the most accurate" in longer


def test_report_of_results_not_yet_written(quick_run):
    """markdown() works on run()'s result before write() has saved the model (the file
    sizes are then left out), and the JSON leaves the unknown size out too."""
    _, _, _, _, typed = quick_run
    assert typed.sparse.sparse_file_bytes is None
    text = report.markdown(typed, [])
    assert "weights + biases in memory" in text and "file: dense" not in text
    assert "sparse_file_bytes" not in typed.as_dict()["sparse"]


def test_results_json_is_the_typed_result(quick_run):
    """results.json holds exactly the typed result's as_dict(), the file size filled in."""
    out, _, _, results, typed = quick_run
    written = json.loads(json.dumps(typed.as_dict()))
    written["sparse"]["sparse_file_bytes"] = (out / "model.npz").stat().st_size
    assert written == results


def test_a_table_is_rendered_once_for_terminal_and_report(quick_run):
    """The terminal and report.md show the same tables: one builder, two renderings."""
    out, stdout, _, _, typed = quick_run
    text = (out / "report.md").read_text()
    for table in (report.codes_table(typed.codes),
                  report.steps_table(typed.mdl.records, typed.mdl.file_bytes),
                  report.quantized_table(typed.quantized)):
        assert table.text() in stdout
        assert table.markdown() in text


def test_demo_quantized_files_hold_together(quick_run):
    """The 8-bit file is the cubic path's model at 8 bits; every file's size is its
    model's as saved; the smallest file is within a point of the baseline and no larger
    than any listed file that is."""
    out, _, _, results, typed = quick_run
    q = typed.quantized
    X, y, Xt, yt = demo.load("blobs", results["network"]["seed"])
    by_bits = {f.bits: f for f in q.files}
    assert set(by_bits) == {None, *demo.QUANTIZED_BITS}
    eight = spp.load(out / "model-8bit.spp")
    assert eight.bits == 8 and eight.sparsity == pytest.approx(typed.sparse.sparsity)
    assert (out / "model-8bit.spp").stat().st_size == by_bits[8].file_bytes
    assert eight.score(Xt, yt) == by_bits[8].test_accuracy
    assert eight.nbytes() == by_bits[8].memory_bytes
    assert by_bits[None].test_accuracy == pytest.approx(
        results["paths"]["cubic"][-1]["val_accuracy"])
    floor = q.baseline_accuracy - q.tolerance
    listed = q.files if q.smallest is None else q.files + (q.smallest,)
    for f in listed:
        assert f.file_vs_model == pytest.approx(8 * f.file_bytes / f.model_bits)
        # A compact file is about its model bits (an .npz spends hundreds of bytes of
        # headers a member, which a model this small notices).
        assert 0.5 < f.file_vs_model < (2 if f.version == 2 else 20), f
    if q.smallest is not None:
        assert q.smallest.test_accuracy >= floor - 1e-12
        assert all(q.smallest.file_bytes <= f.file_bytes for f in q.files
                   if f.bits is not None and f.test_accuracy >= floor)
    else:
        assert all(f.test_accuracy < floor for f in q.files if f.bits is not None)
    assert q.searched == 7 * (1 + results["mdl"]["steps"])
    sweep_files = results["mdl"]["file_bytes"]
    assert len(sweep_files) == results["mdl"]["steps"]
    for record, size in zip(results["mdl"]["sweep"], sweep_files):
        b = record["description_length"]["bits"]
        assert (size is None) == (8 < b < 32)
        if size is not None:
            assert 0.5 < 8 * size / record["description_length"]["model_bits"] < 2


def test_report_shows_the_files_beside_the_description_length():
    import dataclasses

    from sparseprune.app.results import Quantized, ServedFile

    base = _fake_results(best_total=500.0, uniform=1000.0)
    assert "## Sparse and quantized" not in report.markdown(base, [])
    files = (ServedFile("cubic path's end", 0.9, None, 1, 0.965, 26_000, 43_000, 180_000.0),
             ServedFile("cubic path's end", 0.9, 8, 2, 0.965, 7_000, 21_000, 64_000.0))
    smallest = ServedFile("sweep step 4", 0.82, 5, 2, 0.9655, 5_000, 30_000, 40_000.0)
    quantized = Quantized(dense_bytes=200_000, baseline_accuracy=0.9733, files=files,
                          smallest=smallest, tolerance=0.01, searched=119)
    text = report.markdown(dataclasses.replace(base, quantized=quantized), [])
    assert "## Sparse and quantized" in text
    table = report.quantized_table(quantized).markdown()
    assert table in text
    assert "| cubic path's end | 90.00% | 8 | 2 | 96.50% | 7,000 | 0.875 | 28.6x |" in table
    assert "smallest within 1 point: sweep step 4 | 82.00% | 5 |" in table
    assert "sweep step 4 at 5 bits, 5,000 bytes, 96.55%, 40.0x smaller" in text
    reading = report.reading(dataclasses.replace(base, quantized=quantized))
    assert "At 8 bits a value it scores 96.50%" in reading and "28.6x" in reading
    assert dataclasses.replace(base, quantized=quantized).as_dict()["quantized"][
        "smallest"]["file_vs_model"] == pytest.approx(1.0)
