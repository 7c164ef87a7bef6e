"""Models in and out of the frameworks users train in.

``sparseprune.from_sklearn`` (:mod:`.sklearn_in`) reads a fitted scikit-learn MLP;
``sparseprune.from_torch`` (:mod:`.torch_in`) reads a PyTorch ``nn.Sequential`` and
``model.to_torch()`` (:mod:`.torch_out`) writes one. scikit-learn and PyTorch are
optional extras, imported inside these functions on first use.

This package's ``__init__`` imports none of its modules: ``model.py`` imports
:mod:`.torch_out`, and :mod:`.torch_in` and :mod:`.sklearn_in` import ``model.py``.
"""

__all__ = []
