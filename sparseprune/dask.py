"""Scoring on Dask: a model applied to a row-chunked ``dask.array``, lazily, on the
threaded scheduler, a ``distributed.LocalCluster`` or any cluster a ``Client`` points to.

::

    import dask.array as da
    import sparseprune as spp

    X = da.from_zarr("features.zarr")              # (n_samples, n_features), rows in chunks
    labels = spp.dask.predict(smodel, X)           # lazy: (n_samples,) int64, X's row chunks
    proba = spp.dask.predict_proba(smodel, X)      # lazy: (n_samples, n_classes)
    labels.to_zarr("labels.zarr")                  # or .compute(), da.store(...)

Dask (``dask[array]``, and ``distributed`` for clusters) is an optional extra: this
module imports it only inside the functions that need it, so ``import sparseprune``
never does.

How it runs:

- **The model travels once per worker.** It enters the graph as one ``dask.delayed``
  object that every block's task depends on: the scheduler sends it to each worker once
  and the worker keeps it, where a model embedded in each task would travel with every
  block. A :class:`SparseMLP` travels as its own ``.npz`` (``save``/``load``: an eighth
  of its dense size at 90% sparsity, validated on arrival, each layer's backend kept);
  its measured choices (``plans()``) do not travel, as they hold for the machine and
  thread count they were timed on: each worker measures its own.
- **Threads: one per task, not every core in every process.** A Dask worker given
  ``n`` threads runs ``n`` tasks at once, and the threaded scheduler one task per core.
  Left alone, each task's Numba kernels would start a thread per core and OpenBLAS its
  own pool, so two worker processes on a 2-core machine would run eight threads on two
  cores, each pool spinning on cores the other needs. So each task runs its Numba
  kernels on one thread (``numba.set_num_threads``, which holds for the calling thread
  only) and holds BLAS to one thread (``threadpoolctl``; BLAS's count is per process,
  so it is set when the first task starts and restored when the last one ends). A task on the main
  thread (the synchronous scheduler, one task at a time) keeps the process's threads.
  ``threads=k`` gives each task ``k`` threads instead, for a worker with more cores than
  task slots (``dask worker --nthreads 1`` on a large machine); so does the Dask config
  value ``sparseprune.threads`` on the workers.
- **Kernels compile once per machine.** They live in ``sparseprune.kernels``, compiled
  for explicit signatures and cached on disk, so a worker process loads them when it
  first imports sparseprune and no task compiles anything.
- **Bad input** gets its error before any graph is built (not a dask array, not 2-D,
  wrong feature count, not numeric); a block holding NaN or an infinity raises a
  ValueError naming the row (its index in X) when it is computed.
"""

import contextlib
import math
import os
import tempfile
import threading
import uuid
from collections import deque

import numba
import numpy as np

from ._tuning import blas_threads_held
from ._validation import check_feature_layout, check_finite_rows, check_int
from .model import SparseMLP, load

__all__ = ["output_layout", "predict", "predict_chunks", "predict_proba", "task_threads"]


# -- the model as it travels ------------------------------------------------------------


class _Shipped:
    """A model in a Dask graph: ``shipped.model`` on every worker.

    Pickles a SparseMLP as its ``.npz`` file's bytes (a SparseMLP does not pickle: its
    plans hold locks, and their timings belong to the machine that made them) and any
    other model as itself. The Dask token is drawn once, so that tokenizing never
    serializes the model."""

    def __init__(self, model):
        self.model = model
        self.token = uuid.uuid4().hex

    def __dask_tokenize__(self):
        return self.token

    def __reduce__(self):
        if isinstance(self.model, SparseMLP):
            with tempfile.TemporaryDirectory(prefix="sparseprune-") as tmp:
                path = os.path.join(tmp, "model.npz")
                self.model.save(path)
                with open(path, "rb") as f:
                    data = f.read()
            backends = [layer.backend for layer in self.model.layers]
            return _unpack_sparse, (data, backends, self.token)
        return _unpack, (self.model, self.token)


def _unpack(model, token):
    shipped = _Shipped(model)
    shipped.token = token
    return shipped


def _unpack_sparse(data, backends, token):
    with tempfile.TemporaryDirectory(prefix="sparseprune-") as tmp:
        path = os.path.join(tmp, "model.npz")
        with open(path, "wb") as f:
            f.write(data)
        model = load(path)
    for layer, backend in zip(model.layers, backends):
        if layer.backend != backend:  # a quantized layer's is fixed, and read-only
            layer.backend = backend
    return _unpack(model, token)


# -- threads ----------------------------------------------------------------------------


def _resolve_threads(threads):
    """Threads for the running task: ``threads`` if given, else the Dask config value
    ``sparseprune.threads``, else 1 on a pool thread and None (the process's own
    settings) on the main thread."""
    if threads is None:
        import dask.config

        threads = dask.config.get("sparseprune.threads", None)
        if threads is not None:
            return check_int(threads, "the Dask config value sparseprune.threads", minimum=1)
    if threads is not None:
        return check_int(threads, "threads", minimum=1)
    return None if threading.current_thread() is threading.main_thread() else 1


@contextlib.contextmanager
def task_threads(threads=None):
    """Run the block with Numba's kernels and BLAS on the task's threads (see the
    module's notes): ``threads`` if given, else the Dask config value
    ``sparseprune.threads``, else one thread on a scheduler's pool thread and the
    process's own settings on the main thread. Numba's count is set for the calling
    thread only and restored after."""
    threads = _resolve_threads(threads)
    if threads is None:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        with blas_threads_held(threads):
            yield
    finally:
        numba.set_num_threads(previous)


# -- the graph --------------------------------------------------------------------------


def _as_dask_array(X):
    import dask.array as da

    if hasattr(X, "to_dask_array") and not isinstance(X, da.Array):
        X = X.to_dask_array()  # a dask DataFrame: its row lengths may stay unknown
    if not isinstance(X, da.Array):
        raise TypeError(
            f"X must be a dask array (n_samples, n_features) with rows in chunks, got "
            f"{type(X).__name__}; for an in-memory array call model.predict(X), or wrap "
            "it: dask.array.from_array(X, chunks=(rows, -1))")
    return X


def output_layout(model, method="predict"):
    """(trailing shape, dtype) of what ``model.<method>`` gives per sample, read off one
    row of zeros: ``((), int64)`` for class labels, ``((k,), float32)`` for a row of
    ``k`` probabilities or values, ... A method the model lacks, or refuses (a
    regressor's ``predict_proba``), raises the model's own error."""
    out = np.asarray(getattr(model, method)(np.zeros((1, model.n_features), model.dtype)))
    if out.ndim == 0 or out.shape[0] != 1:
        raise TypeError(f"model.{method} must return one row per sample, got shape "
                        f"{out.shape} for one sample")
    return out.shape[1:], out.dtype


def _score_block(block, shipped, method, tail, out_dtype, threads, block_info=None):
    """``shipped.model.<method>`` of one block (rows, n_features); a block with NaN
    gets a ValueError naming the row by its index in the whole array."""
    info = block_info[0]
    start = info["array-location"][0][0]
    if start is None or math.isnan(start):  # unknown chunk sizes (a DataFrame's values)
        name, start = f"X (block {info['chunk-location'][0]}; rows counted in the block)", 0
    else:
        name = "X"
    check_finite_rows(block, name, int(start))
    if block.shape[0] == 0:
        return np.empty((0, *tail), out_dtype)
    with task_threads(threads):
        return getattr(shipped.model, method)(block)


def _scored(model, X, method, threads):
    import dask
    import dask.array as da

    X = _as_dask_array(X)
    check_feature_layout(X.shape, X.dtype, model.n_features)
    if threads is not None:
        threads = check_int(threads, "threads", minimum=1)
    tail, dtype = output_layout(model, method)
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})  # a model needs whole rows
    shipped = dask.delayed(_Shipped(model), pure=True)
    # Rows as X's; a label or single value per row drops the feature axis, several
    # outputs replace it with one whole chunk.
    layout = dict(chunks=(X.chunks[0],), drop_axis=1) if not tail else dict(
        chunks=(X.chunks[0], *((n,) for n in tail)))
    return da.map_blocks(_score_block, X, shipped, method=method, tail=tail,
                         out_dtype=dtype, threads=threads, dtype=dtype,
                         meta=np.empty((0, *tail), dtype), token=f"sparseprune-{method}",
                         **layout)


def predict(model, X, threads=None):
    """``model.predict`` of a dask array, lazily.

    model: an ``MLP`` or ``SparseMLP`` (anything with ``predict``, ``n_features`` and
    ``dtype``). X: a dask array (n_samples, n_features) of any real numeric dtype, rows
    in chunks (column chunks are joined), or a dask DataFrame. Returns a dask array with
    X's row chunks: (n_samples,) for a classifier's labels (int64) and a single
    regression output, (n_samples, n_outputs) for several; the dtype and shape are the
    model's own, read off one row of zeros. ``threads``: per task, see
    :func:`task_threads`.
    """
    return _scored(model, X, "predict", threads)


def predict_proba(model, X, threads=None):
    """``model.predict_proba`` of a dask array, lazily: (n_samples, n_classes) of the
    model's dtype, X's row chunks. A model without probabilities (a regressor) raises
    its own error here, before any graph is built. See :func:`predict`."""
    return _scored(model, X, "predict_proba", threads)


# -- streaming from the client ------------------------------------------------------------


def _score_chunk(shipped, chunk, method, threads):
    with task_threads(threads):
        return getattr(shipped.model, method)(chunk)


def predict_chunks(client, model, chunks, method="predict", in_flight=None, threads=None,
                   name="X"):
    """Score in-memory chunks on the cluster ``client`` points to; yields the results in
    order.

    For data that lives with the caller (a file read chunk by chunk, a stream): each
    chunk (rows, n_features) is checked here (feature count, NaN named by its row
    counted over all chunks), sent to a worker and scored there, with at most
    ``in_flight`` chunks out at once (default: twice the cluster's threads), so the
    caller's memory stays bounded. The model is sent to every worker once, before the
    first chunk. ``method``: "predict" or "predict_proba"; ``threads``: per task, see
    :func:`task_threads`; ``name``: the data's name in error messages.
    """
    # Checked here, at the call; the generator below starts only when iterated.
    if method not in ("predict", "predict_proba"):
        raise ValueError(f"method must be 'predict' or 'predict_proba', got {method!r}")
    if in_flight is None:
        in_flight = 2 * max(1, sum(client.nthreads().values()))
    in_flight = check_int(in_flight, "in_flight", minimum=1)
    if threads is not None:
        threads = check_int(threads, "threads", minimum=1)
    tail, dtype = output_layout(model, method)
    return _stream(client, model, chunks, method, in_flight, threads, name, tail, dtype)


def _stream(client, model, chunks, method, in_flight, threads, name, tail, dtype):
    """predict_chunks' generator, on checked arguments."""
    shipped = client.scatter(_Shipped(model), broadcast=True, hash=False)
    pending = deque()  # futures, or the empty result of an empty chunk, in order
    start = 0
    try:
        for chunk in chunks:
            chunk = np.asarray(chunk)
            check_feature_layout(chunk.shape, chunk.dtype, model.n_features, name)
            check_finite_rows(chunk, name, start)
            start += chunk.shape[0]
            if chunk.shape[0] == 0:
                pending.append(np.empty((0, *tail), dtype))
            else:
                pending.append(client.submit(_score_chunk, shipped,
                                             client.scatter(chunk, hash=False), method,
                                             threads, pure=False))
            if len(pending) >= in_flight:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        for item in pending:
            if not isinstance(item, np.ndarray):
                item.cancel()
        shipped.release()


def _result(item):
    return item if isinstance(item, np.ndarray) else item.result()
