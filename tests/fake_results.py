"""Hand-made demo results, typed as ``sparseprune demo`` returns them, for the tests of
the report and the figures (no training run needed)."""

import math

from sparseprune.app.results import (
    Baseline, BitsBackSearch, Codes, DataInfo, DemoResult, OneShot, SparsePayoff, Sweep, Timing,
)
from sparseprune.mdl import BitsBack, DescriptionLength, Prequential, VariationalCode
from sparseprune.prune import PruneStep


def code(model_bits, data_bits, n_samples=100, n_classes=5, bits=4):
    """A two-part code with these totals (the model bits all in the header)."""
    return DescriptionLength(bits=bits, header_bits=float(model_bits), layers=(),
                             data_bits=float(data_bits), n_samples=n_samples,
                             n_classes=n_classes)


def bits_back(total, n_samples=100, n_classes=5):
    return BitsBack(header_bits=float(total) / 2, layers=(), data_bits=float(total) / 2,
                    data_bits_sem=None, data_bits_at_mean=float(total) / 4,
                    n_samples=n_samples, n_classes=n_classes, draws=1, seed=0)


def noisy(total, prior, n_samples=100, n_classes=5):
    return VariationalCode(prior=prior, header_bits=float(total) / 2, layers=(),
                           data_bits=float(total) / 2, data_bits_sem=None,
                           data_bits_at_mean=float(total) / 4, n_samples=n_samples,
                           n_classes=n_classes, draws=1, seed=0)


def step(i, sparsity, accuracy, model_bits, data_bits, n_weights=1000, n_bias=69, bits=4,
         n_samples=100, n_classes=5):
    """A pruning step whose description length has these totals (its uniform code is
    ``n_samples log2 n_classes`` bits)."""
    active = round(n_weights * (1 - sparsity)) + n_bias
    return PruneStep(step=i, target=sparsity, sparsity=sparsity, active=active,
                     total=n_weights + n_bias, loss=0.05, train_accuracy=accuracy,
                     val_accuracy=accuracy,
                     description_length=code(model_bits, data_bits, n_samples, n_classes,
                                             bits=bits))


def result(sweep, preferred_step, most_accurate_step=None, paths=None, uniform=None,
           n_train=100, n_classes=5, base_total=5e4, base_active=1069):
    """A DemoResult around ``sweep`` (PruneSteps), with plausible everything else."""
    uniform = n_train * math.log2(n_classes) if uniform is None else uniform
    if most_accurate_step is None:
        most_accurate_step = max(sweep, key=lambda r: (r.val_accuracy, -r.step)).step
    paths = {"cubic": tuple(sweep)} if paths is None else paths
    preferred = next((r for r in sweep if r.step == preferred_step), sweep[0])
    timing = (Timing(batch=1, dense_ms=2.0, sparse_ms=1.0),)
    return DemoResult(
        data=DataInfo(name="blobs", n_train=n_train, n_test=50, n_features=20,
                      n_classes=n_classes),
        sizes=(20, 64, 5), dtype="float32", seed=0,
        settings={"bits_back_sigmas": [0.01, 0.1]},
        baseline=Baseline(train_accuracy=1.0, test_accuracy=0.99, active=base_active,
                          total=base_active, description_length=code(base_total - 10, 10),
                          description_length_32=code(base_total * 8, 10)),
        one_shot=OneShot(sparsity=0.5, active=base_active // 2, test_accuracy=0.95,
                         finetuned_test_accuracy=0.98),
        paths=paths,
        mdl=Sweep(schedule="geometric", target=0.99, steps=len(sweep), records=tuple(sweep),
                  preferred_step=preferred_step, most_accurate_step=most_accurate_step),
        codes=Codes(uniform_bits=uniform, two_part=code(base_total - 10, 10),
                    two_part_preferred=preferred.description_length,
                    bits_back=BitsBackSearch(sigma=0.01, code=bits_back(3.0), by_sigma={}),
                    bits_back_preferred=BitsBackSearch(sigma=0.1, code=bits_back(3.0),
                                                       by_sigma={}),
                    prequential=Prequential(ends=(50, n_train), block_bits=(1.0, 2.0),
                                            n_classes=n_classes),
                    noisy_gaussian=noisy(2.5, "gaussian"), noisy_mixture=noisy(2.7, "mixture")),
        sparse=SparsePayoff(sparsity=0.9, max_abs_proba_difference=1e-7, same_predictions=1.0,
                            dense_bytes=100, sparse_bytes=10, dense_file_bytes=200,
                            dense_compressed_file_bytes=150, backends={1: ["sparse", "dense"]},
                            timing=timing),
        seconds=1.0)
