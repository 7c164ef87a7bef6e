"""The typed shape of ``sparseprune demo``'s results.

:func:`sparseprune.app.demo.run` returns a :class:`DemoResult`; the report, the figures
and ``results.json`` (:meth:`DemoResult.as_dict`) all read it. The records the library
already returns (:class:`~sparseprune.prune.PruneStep`, the ``mdl`` codes) are kept as
they are; the demo adds the few records of its own below.
"""

from dataclasses import asdict, dataclass

from ..mdl import BitsBack, DescriptionLength, Prequential, VariationalCode

__all__ = ["Baseline", "BitsBackSearch", "Codes", "DataInfo", "DemoResult", "MethodCurve",
           "Methods", "OneShot", "Quantized", "ServedFile", "SparsePayoff", "Sweep", "Timing"]


@dataclass(frozen=True)
class DataInfo:
    """The data set: its name and size."""

    name: str
    n_train: int
    n_test: int
    n_features: int
    n_classes: int


@dataclass(frozen=True)
class Baseline:
    """The dense network after its training, coded at the best ``b`` and at 32 bits."""

    train_accuracy: float
    test_accuracy: float
    active: int
    total: int
    description_length: DescriptionLength
    description_length_32: DescriptionLength
    sparsity: float = 0.0

    def as_dict(self):
        record = asdict(self)
        record["description_length"] = self.description_length.as_dict()
        record["description_length_32"] = self.description_length_32.as_dict()
        return record


@dataclass(frozen=True)
class OneShot:
    """One-shot 50% magnitude pruning, before and after fine-tuning."""

    sparsity: float
    active: int
    test_accuracy: float
    finetuned_test_accuracy: float

    def as_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class Sweep:
    """The pruning sweep that looks for the shortest description length."""

    schedule: str
    target: float
    steps: int
    records: tuple  # of sparseprune.prune.PruneStep, each with its description length
    preferred_step: int  # the step MDL prefers (shortest total)
    most_accurate_step: int
    # Per record, the bytes of its model saved at the record's b (format version 2: b-bit
    # codes for b <= 8, float32 values for b = 32; None for 9..16, which no file holds).
    file_bytes: tuple = ()

    def step(self, number):
        """The record of step ``number``; a ValueError if there is none."""
        for record in self.records:
            if record.step == number:
                return record
        raise ValueError(f"step {number!r} is not among the steps "
                         f"{[r.step for r in self.records]}")

    @property
    def preferred(self):
        return self.step(self.preferred_step)

    @property
    def most_accurate(self):
        return self.step(self.most_accurate_step)

    def as_dict(self):
        return {"schedule": self.schedule, "target": self.target, "steps": self.steps,
                "sweep": [r.as_dict() for r in self.records],
                "preferred_step": self.preferred_step,
                "most_accurate_step": self.most_accurate_step,
                "file_bytes": list(self.file_bytes)}


@dataclass(frozen=True)
class BitsBackSearch:
    """The shortest bits-back code over a grid of posterior widths."""

    sigma: float
    code: BitsBack
    by_sigma: dict  # {sigma: total bits}

    def as_dict(self):
        return {"sigma": self.sigma, **self.code.as_dict(),
                "by_sigma": {str(s): t for s, t in self.by_sigma.items()}}


@dataclass(frozen=True)
class Codes:
    """Every code of the training labels the demo measures."""

    uniform_bits: float
    two_part: DescriptionLength  # the dense baseline's
    two_part_preferred: DescriptionLength  # the MDL-preferred step's
    bits_back: BitsBackSearch
    bits_back_preferred: BitsBackSearch
    prequential: Prequential
    # The paper's own code: sigmas learned by mdl.variational, from the MDL-preferred
    # step, with each prior that is a proper code.
    noisy_gaussian: VariationalCode
    noisy_mixture: VariationalCode

    def as_dict(self):
        return {"uniform_bits": self.uniform_bits,
                **{name: getattr(self, name).as_dict()
                   for name in ("two_part", "two_part_preferred", "bits_back",
                                "bits_back_preferred", "prequential", "noisy_gaussian",
                                "noisy_mixture")}}


@dataclass(frozen=True)
class Timing:
    """Median ``predict_proba`` times of the dense and the sparse model at one batch."""

    batch: int
    dense_ms: float
    sparse_ms: float

    @property
    def speedup(self):
        return self.dense_ms / self.sparse_ms

    def as_dict(self):
        return {**asdict(self), "speedup": self.speedup}


@dataclass(frozen=True)
class SparsePayoff:
    """The pruned model as a SparseMLP: agreement, bytes, files and speed."""

    sparsity: float
    max_abs_proba_difference: float
    same_predictions: float
    dense_bytes: int
    sparse_bytes: int
    dense_file_bytes: int
    dense_compressed_file_bytes: int
    backends: dict  # {batch: [each layer's backend]}
    timing: tuple  # of Timing
    sparse_file_bytes: int | None = None  # known once the model is saved

    def as_dict(self):
        record = {k: v for k, v in asdict(self).items() if k != "timing"}
        record["backends"] = {str(b): list(v) for b, v in self.backends.items()}
        record["timing"] = [t.as_dict() for t in self.timing]
        if self.sparse_file_bytes is None:
            del record["sparse_file_bytes"]
        return record


@dataclass(frozen=True)
class ServedFile:
    """A pruned model as it is served and saved: values as float32 (``bits`` None) or
    ``bits``-bit codes, its test accuracy, its file and the two-part code's model bits
    at the same precision (b = 32 for float32)."""

    name: str
    sparsity: float
    bits: int | None
    version: int  # the file's format version
    test_accuracy: float
    file_bytes: int
    memory_bytes: int  # weights and biases as the SparseMLP holds them
    model_bits: float

    @property
    def file_vs_model(self):
        """File bits over the two-part code's model bits: 1 is the bound met."""
        return 8 * self.file_bytes / self.model_bits

    def as_dict(self):
        return {**asdict(self), "file_vs_model": self.file_vs_model}


@dataclass(frozen=True)
class Quantized:
    """The pruned model's values at fewer bits: files beside the description length,
    and the smallest file found within ``tolerance`` of the dense baseline's accuracy."""

    dense_bytes: int  # the dense float32 (or float64) weights and biases
    baseline_accuracy: float
    files: tuple  # of ServedFile: the cubic path's model as float32 and at fewer bits
    smallest: ServedFile | None  # None: no candidate within the tolerance
    tolerance: float
    searched: int  # (model, bits) candidates tried for the smallest

    def as_dict(self):
        return {"dense_bytes": self.dense_bytes, "baseline_accuracy": self.baseline_accuracy,
                "tolerance": self.tolerance, "searched": self.searched,
                "files": [f.as_dict() for f in self.files],
                "smallest": None if self.smallest is None else self.smallest.as_dict()}


@dataclass(frozen=True)
class MethodCurve:
    """One pruning method's test accuracy at each sparsity it reached (the fraction of
    the weights pruned, or removed with their units)."""

    name: str
    sparsity: tuple
    test_accuracy: tuple

    def as_dict(self):
        return {"name": self.name, "sparsity": list(self.sparsity),
                "test_accuracy": list(self.test_accuracy)}


@dataclass(frozen=True)
class Methods:
    """The pruning methods side by side (:func:`sparseprune.app.methods.compare`)."""

    baseline_accuracy: float
    curves: tuple  # of MethodCurve, each at the sparsities of settings["sparsities"]
    structured: MethodCurve  # at the fractions of the weights its units took along
    settings: dict

    def as_dict(self):
        return {"baseline_accuracy": self.baseline_accuracy, "settings": self.settings,
                "curves": [c.as_dict() for c in self.curves],
                "structured": self.structured.as_dict()}


@dataclass(frozen=True)
class DemoResult:
    """Every number of one ``sparseprune demo`` run."""

    data: DataInfo
    sizes: tuple
    dtype: str
    seed: int
    settings: dict  # the run's training settings, JSON-ready
    baseline: Baseline
    one_shot: OneShot
    paths: dict  # {schedule: tuple of sparseprune.prune.PruneStep}
    mdl: Sweep
    codes: Codes
    sparse: SparsePayoff
    seconds: float
    quick: bool = False
    methods: Methods | None = None
    quantized: Quantized | None = None

    def as_dict(self):
        """The JSON document ``results.json`` holds."""
        methods = {} if self.methods is None else {"methods": self.methods.as_dict()}
        if self.quantized is not None:
            methods["quantized"] = self.quantized.as_dict()
        return {
            "data": asdict(self.data),
            "network": {"sizes": list(self.sizes), "dtype": self.dtype, "seed": self.seed},
            "settings": dict(self.settings, quick=self.quick),
            "baseline": self.baseline.as_dict(),
            "one_shot": self.one_shot.as_dict(),
            "paths": {name: [r.as_dict() for r in records]
                      for name, records in self.paths.items()},
            "mdl": self.mdl.as_dict(),
            "codes": self.codes.as_dict(),
            "sparse": self.sparse.as_dict(),
            **methods,
            "seconds": self.seconds,
        }

