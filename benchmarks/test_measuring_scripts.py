"""The measuring scripts (``paired.py``, ``tune.py``) end to end on small cases. Each
checks every setting it compares against NumPy before timing it, so a setting that
computes something else fails here, as does a script that no longer runs."""

import os

import paired
import pytest
import tune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("layout", ["sm", "fm"])
def test_tune_panels_times_every_width_and_block_size(layout):
    times = tune.main(["panels", "--shape", "600", "130", "--sparsity", "0.5", "--batch",
                       "70", "--widths", "0", "auto", "64", "256", "--block-nnz", "auto",
                       "5000", "--layout", layout, "--rounds", "2"])
    names = list(times)
    # "auto" chooses no panels at 600 inputs: widths 0, 64 and 256, the last two twice.
    assert len(names) == 5
    assert names[0] == "no panels"
    assert sum(name.startswith("width 64 ") for name in names) == 2
    assert all(t.shape == (2,) and (t > 0).all() for t in times.values())


@pytest.mark.parametrize("what", ["pack", "sddmm", "layout"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tune_settings_agree_with_numpy(what, dtype):
    # Wide enough for the forward's panels with 128- and 256-byte tiles alike.
    times = tune.main([what, "--shape", "4200", "40", "--sparsity", "0.7", "--batch", "67",
                       "--dtype", dtype, "--rounds", "2", "--quiet"])
    # pack: default, one thread, all; sddmm: panels, rows, untiled; layout: 2 reads, 3 writes
    assert len(times) == {"pack": 3, "sddmm": 3, "layout": 5}[what]


def test_paired_ratio_in_one_process_and_across_trees(capsys):
    one = paired.main(["--shape", "300", "200", "--batch", "3", "--pairs", "4"])
    assert one["pairs"] == 4 and one["ratio"] > 0
    fm = paired.main(["--shape", "300", "200", "--batch", "64", "--pairs", "4", "--layout",
                      "fm", "--dtype", "float64"])
    assert fm["sparse_ms"] > 0
    both = paired.main(["--shape", "100", "50", "--batch", "1", "--pairs", "2", "--trees",
                        ROOT, "--rounds", "1"])
    assert [len(rounds) for rounds in both.values()] == [1]
    assert "median of 1 rounds" in capsys.readouterr().out
