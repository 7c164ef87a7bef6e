"""Training: options, optimizers, per-layer backends and the epoch loop.

``fit(model, X, y, **options)`` (what ``MLP.fit`` runs) with :class:`FitOptions` the one
home of its options; :class:`SGD` and :class:`Adam`; the dense and sparse backends that
run each layer's passes.
"""

from .backends import DenseBackend, SparseBackend, choose_backends
from .gradients import BatchGradients, batch_gradients_fm
from .loop import (History, bind, check_validation_data, fit, fit_fm, fit_sm, record_epoch,
                   run_epoch, take_rows)
from .optimizers import SGD, Adam, make_optimizer
from .options import FitOptions

__all__ = ["Adam", "BatchGradients", "DenseBackend", "FitOptions", "History", "SGD",
           "SparseBackend", "batch_gradients_fm", "bind", "check_validation_data",
           "choose_backends", "fit", "fit_fm", "fit_sm", "make_optimizer", "record_epoch",
           "run_epoch", "take_rows"]
