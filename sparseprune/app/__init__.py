"""The applications built on the library: the ``sparseprune`` command line (``cli``),
the notebook's story end to end (``demo``, its typed ``results`` and its ``report``),
speed and bytes against sparsity (``profile``), their figures (``plots``, matplotlib
being an optional extra) and tables (``tables``)."""

__all__ = []
