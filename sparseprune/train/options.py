"""fit's options: one validated home, shared by ``fit`` and every driver that trains.

``MLP.fit``, ``train.fit``, ``prune.iterative`` (its fine-tuning) and the coming drivers
take the same options by name and turn them into one :class:`FitOptions`, which checks
them all before anything runs.
"""

import dataclasses

from .._tuning import check_backend
from .._validation import check_int, check_real
from .optimizers import make_optimizer

__all__ = ["AUTO_BATCH", "FitOptions"]

#: batch_size=None trains on mini-batches of min(AUTO_BATCH, n): scikit-learn's "auto".
AUTO_BATCH = 200


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """How ``fit`` trains; every field checked when made.

    The defaults are scikit-learn's MLP's, which train small and medium data well with
    no options: Adam at 1e-3, mini-batches of min(200, n), up to 200 epochs, stopping
    once the training loss has not improved by ``tol`` for more than
    ``n_iter_no_change`` epochs.

    Parameters
    ----------
    epochs : int >= 0
        At most this many epochs (fewer if the loss stops improving, see ``tol``).
    lr : float > 0, optional
        Learning rate; 0.001 for Adam and 0.01 for SGD by default.
    batch_size : int >= 1, "full" or None
        Mini-batch size; "full" is the whole set (full-batch gradient descent), None
        min(200, n). The last batch of an epoch may be smaller.
    optimizer : "adam", "sgd", or an optimizer object
        With ``"sgd"`` and ``momentum=0`` a step is exactly ``w -= lr * grad``. An
        object (``spp.SGD(...)``, ``spp.Adam(...)``) carries its own lr, momentum and
        weight decay; giving them here too is an error.
    momentum, weight_decay : float, optional
        SGD momentum in [0, 1), default 0.9 (SGD only); coupled L2 weight decay >= 0,
        default 0 (both optimizers).
    progress : bool
        A progress bar over epochs, with the loss and validation accuracy.
    seed : int >= 0, optional
        Seeds the shuffling; by default it is drawn from the model's own seeded stream.
    tol : float >= 0 or None
        Stop once the epoch's training loss has failed to fall below the best so far
        minus ``tol`` for more than ``n_iter_no_change`` epochs in a row
        (scikit-learn's rule); None trains every epoch.
    n_iter_no_change : int >= 1
    l1 : float >= 0
        L1 penalty on the weights (not the biases), ``l1 * sum |w|`` added to the loss
        and minimized by a proximal step: after every optimizer step each weight is
        soft-thresholded by ``lr * l1``, so weights reach exactly zero; when training
        ends, the mask drops the weights that are zero (they are pruned).
    backend : "dense", "sparse" or "auto"
        How the layers train. "dense": the masked weight matrices through BLAS.
        "sparse": only the surviving weights, through the CSR kernels (same results to
        rounding). "auto": per layer, whichever measured faster for one forward and
        backward pass at this batch size.
    """

    epochs: int = 200
    lr: float | None = None
    batch_size: int | str | None = None
    optimizer: object = "adam"
    momentum: float | None = None
    weight_decay: float | None = None
    progress: bool = True
    seed: int | None = None
    backend: str = "dense"
    tol: float | None = 1e-4
    n_iter_no_change: int = 10
    l1: float = 0.0

    def __post_init__(self):
        def set_(name, value):
            object.__setattr__(self, name, value)

        set_("epochs", check_int(self.epochs, "epochs", minimum=0))
        if self.batch_size is not None and self.batch_size != "full":
            if isinstance(self.batch_size, str):
                raise ValueError(f"batch_size must be a positive integer, 'full' or None, "
                                 f"got {self.batch_size!r}")
            set_("batch_size", check_int(self.batch_size, "batch_size", minimum=1))
        if self.tol is not None:
            set_("tol", check_real(self.tol, "tol", low=0.0))
        set_("n_iter_no_change", check_int(self.n_iter_no_change, "n_iter_no_change",
                                           minimum=1))
        set_("l1", check_real(self.l1, "l1", low=0.0))
        if self.seed is not None:
            set_("seed", check_int(self.seed, "seed", minimum=0))
        check_backend(self.backend)
        set_("progress", bool(self.progress))
        self.make_optimizer()  # checks lr, momentum, weight_decay and their combination

    @classmethod
    def from_kwargs(cls, caller, **options):
        """FitOptions from keyword arguments given to ``caller`` (a function's name, for
        the message): unknown names are a TypeError that lists the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"{caller}() got unexpected keyword arguments {unknown}; "
                            f"its training options are {sorted(known)}")
        return cls(**options)

    def replace(self, **changes):
        """A copy with ``changes``, checked like any other."""
        return dataclasses.replace(self, **changes)

    def batch_for(self, n):
        """The mini-batch size for ``n`` training samples."""
        if self.batch_size == "full":
            return n
        return min(AUTO_BATCH if self.batch_size is None else self.batch_size, n)

    def make_optimizer(self):
        """The optimizer these options describe: a new one by name, or the given object."""
        return make_optimizer(self.optimizer, lr=self.lr, momentum=self.momentum,
                              weight_decay=self.weight_decay)
