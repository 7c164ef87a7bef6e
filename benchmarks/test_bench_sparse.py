"""The sparse engine against dense NumPy and scipy.sparse.

Groups (``--benchmark-group-by=group``), each timing its contenders on one case:

- ``forward {shape} s{sparsity} b{batch}``: one layer, ``X @ W + b``, over the grid in
  ``conftest.py`` (``SPARSEPRUNE_BENCH=quick`` for a short one).
  ``dense``: NumPy with W dense and C-contiguous, sample-major X (the baseline).
  ``dense-masked``: ``X @ (W * mask) + b``, what a dense framework runs when pruned.
  ``scipy``: ``X @ W + b`` with W a ``scipy.sparse.csr_array`` (in, out).
  ``csr``: ``SparseLinear.forward_fm`` on feature-major X (the layout inside a model).
  ``csr-edge``: ``SparseLinear.forward(X)``, transposes at both edges included.
- ``public ...``: the figure a user sees: ``SparseLinear.forward(X)`` on sample-major X
  (``csr``), ``X @ W + b`` (``dense``) and ``X @ W_csr + b`` (``scipy``), every timed
  call right after an untimed dense NumPy product, as in a program that also runs NumPy
  linear algebra (no pause). ``public-model ...``: ``SparseMLP.predict_proba`` against
  the dense ``MLP.predict_proba`` of the same weights, each timed call right after an
  untimed dense ``predict_proba``. In both, the dense call before each timed call is
  the dense contender itself, timed too: the run ends with the paired ratios ``dense /
  contender`` (``conftest.py``), which a slow spell of the host does not skew.
- ``backward ...``: the input and weight gradients of one layer, dense (two BLAS
  products, the weight gradient masked) against the CSR kernels (transposed product,
  sampled weight gradient on the pattern).
- ``model ...``: whole-model inference (class probabilities) of a pruned MLP,
  digits-sized and wide: NumPy layer by layer, dense or masked, scipy layer by layer,
  and ``SparseMLP.predict_proba`` (``csr``; each layer CSR or dense as measured).
- ``epoch ...``: one training epoch of an MLP, ``fit(backend="dense")`` against
  ``fit(backend="sparse")``.
- ``dynamic ...``: 100 steps of ``prune.dynamic`` (RigL, sparse backend, the update they
  hold included) against dense masked training of the same network.
- ``quantized ...``: one layer's ``forward_fm`` on feature-major X, the float CSR layer
  (``csr``) against the same weights quantized to 8 and 4 bits (``q8``, ``q4``:
  ``QuantizedLinear``, uint8 codes and uint16 indices, 3 bytes a nonzero against the float
  layer's 6: float32 values, uint16 indices).
- ``quantized-public ...``: the same through ``layer.forward(X)`` on sample-major X, each
  call right after a dense NumPy product.
- ``threads ...``: a dense product and a parallel CSR product, alternating, as in a
  model that mixes a small dense layer (a quarter of the width) with a pruned one:
  ``pair`` as sparseprune runs it by default (Numba's OpenMP waiting passively),
  ``single-threaded-blas`` inside ``spp.single_threaded_blas()``, and each half alone
  for reference (see ``sparseprune/_tuning.py``).

Every benchmark records in ``extra_info`` its shape, sparsity, batch, nnz, the weight
bytes dense and CSR, the peak bytes allocated by one call (tracemalloc) and GFLOP/s
(2 nnz batch / median).

Threads: BLAS and Numba use every core in the single-layer groups (each contender runs
alone, and the warm-up call lets the other pool's threads go idle first). Under
``--benchmark-disable`` (``make test``) the same tests run once on small shapes.
"""

import numpy as np
import scipy.sparse as sp
from bench_utils import assert_close

import sparseprune as spp
from sparseprune.kernels.dense import IDENTITY
from sparseprune.ops import aligned_empty
from sparseprune.train import DenseBackend, SparseBackend


def _layer(case, rng):
    """W dense (in, out) with the case's sparsity, its SparseLinear, a bias and X."""
    n_in, n_out = case.shape
    mask = rng.random((n_in, n_out)) >= case.sparsity
    W = (rng.standard_normal((n_in, n_out)) * mask).astype(case.dtype)
    b = rng.standard_normal(n_out).astype(case.dtype)
    X = rng.standard_normal((case.batch, n_in)).astype(case.dtype)
    layer = spp.SparseLinear(sp.csc_array(W), b, backend="sparse")
    return W, b, X, layer


def _feature_major(X):
    """X.T laid out as a model lays out its activations: C-contiguous, cache-line
    aligned (see ops.aligned_empty)."""
    xt = aligned_empty(X.T.shape, X.dtype)
    xt[...] = X.T
    return xt


def _info(case, W, layer):
    nnz = layer.nnz
    return dict(shape=list(case.shape), sparsity=case.sparsity, batch=case.batch,
                dtype=case.dtype, nnz=nnz, dense_bytes=W.nbytes, csr_bytes=layer.nbytes(),
                flop=2 * nnz * case.batch)


def test_forward(measure, rng, sparse_case, sparse_contender):
    case = sparse_case
    W, b, X, layer = _layer(case, rng)
    expected = X @ W + b
    if sparse_contender == "dense":
        fn = lambda: X @ W + b  # noqa: E731
    elif sparse_contender == "dense-masked":
        # What a dense framework runs for a pruned layer: weight * mask at every call.
        mask = W != 0
        fn = lambda: X @ (W * mask) + b  # noqa: E731
    elif sparse_contender == "scipy":
        Ws = sp.csr_array(W)
        fn = lambda: X @ Ws + b  # noqa: E731
    elif sparse_contender == "csr":
        xt = _feature_major(X)
        out = aligned_empty((case.shape[1], case.batch), case.dtype)
        fn = lambda: layer.forward_fm(xt, out, IDENTITY)  # noqa: E731
    else:
        fn = lambda: layer.forward(X)  # noqa: E731
    result = fn()
    assert_close(result.T if sparse_contender == "csr" else result, expected, case.dtype)
    measure(fn, f"forward {case.id}", contender=sparse_contender, **_info(case, W, layer))


def test_public(measure, rng, public_case, public_contender):
    case = public_case
    W, b, X, layer = _layer(case, rng)
    layer.backend = "sparse"
    expected = X @ W + b
    Wd = np.ascontiguousarray(W)
    if public_contender == "dense":
        fn = lambda: X @ Wd + b  # noqa: E731
    elif public_contender == "scipy":
        Ws = sp.csr_array(W)
        fn = lambda: X @ Ws + b  # noqa: E731
    else:
        fn = lambda: layer.forward(X)  # noqa: E731
    assert_close(fn(), expected, case.dtype)
    measure(fn, f"public {case.id}", after=lambda: X @ Wd + b, pair="dense",
            contender=public_contender, **_info(case, W, layer))


def test_public_model(measure, rng, public_model_case, public_model_contender):
    case = public_model_case
    public_contender = public_model_contender
    model = spp.MLP(case.sizes, dtype=case.dtype, seed=0)
    spp.prune.magnitude(model, case.sparsity, scope="layer")
    X = rng.standard_normal((case.batch, case.sizes[0])).astype(case.dtype)
    smodel = model.to_sparse()
    expected = model.predict_proba(X)
    served = model if public_contender == "dense" else smodel
    fn = lambda: served.predict_proba(X)  # noqa: E731
    assert_close(fn(), expected, case.dtype)
    measure(fn, f"public-model {case.id.rsplit('-n', 1)[0]}",
            after=lambda: model.predict_proba(X), pair="dense", contender=public_contender,
            sizes=list(case.sizes), sparsity=case.sparsity, batch=case.batch)


def test_backward(measure, rng, backward_case, backward_contender):
    case = backward_case
    W, b, X, _ = _layer(case, rng)
    masked = spp.MaskedLinear(W, b, mask=W != 0)
    backend = (DenseBackend if backward_contender == "dense" else SparseBackend)(masked)
    x = _feature_major(X)
    dz = _feature_major(rng.standard_normal((case.batch, case.shape[1])).astype(case.dtype))
    dx = aligned_empty(x.shape, x.dtype)
    fn = lambda: backend.backward_fm(x, dz, dx)  # noqa: E731
    fn()
    assert_close(dx, W @ dz, case.dtype)
    measure(fn, f"backward {case.id}", contender=backward_contender,
            **_info(case, W, spp.SparseLinear(sp.csc_array(W))))


def test_epoch(measure, rng, epoch_case, backward_contender):
    """One-epoch fits in a row on one model, as a loop of ``fit(epochs=1)`` runs them:
    from the second fit on (the warm-up round is the first), the sparse backend reuses
    each layer's CSR twin (``MaskedLinear.sparse_twin``); a first fit builds it, some
    15 ms a 2048 x 2048 layer."""
    case = epoch_case
    model = spp.MLP(case.sizes, dtype=case.dtype, seed=0)
    spp.prune.magnitude(model, case.sparsity)
    X = rng.standard_normal((case.samples, case.sizes[0])).astype(case.dtype)
    y = rng.integers(0, case.sizes[-1], case.samples)

    def fn():
        return model.fit(X, y, epochs=1, lr=1e-4, batch_size=case.batch, progress=False,
                         backend=backward_contender, seed=0, optimizer="sgd")

    measure(fn, f"epoch {case.id}", contender=backward_contender, sizes=list(case.sizes),
            sparsity=case.sparsity, batch=case.batch, samples=case.samples)


def test_dynamic_epoch(measure, rng, dynamic_case, dynamic_contender):
    """One epoch of dynamic sparse training (RigL, sparse backend, connections moved every
    100 steps: the epoch holds one update) against dense masked training of the same
    network at the same sparsity, SGD for both."""
    case = dynamic_case
    X = rng.standard_normal((case.samples, case.sizes[0])).astype(case.dtype)
    y = rng.integers(0, case.sizes[-1], case.samples)
    model = spp.MLP(case.sizes, dtype=case.dtype, seed=0)
    every = max(1, case.samples // case.batch)
    if dynamic_contender == "dense-masked":
        spp.prune.magnitude(model, case.sparsity, scope="layer")
        def fn():  # noqa: E306
            return model.fit(X, y, epochs=1, lr=1e-4, batch_size=case.batch, seed=0,
                             optimizer="sgd", tol=None, progress=False, backend="dense")
    else:
        def fn():  # noqa: E306
            return spp.prune.dynamic(model, X, y, case.sparsity, method="rigl", epochs=1,
                                     update_every=every, drop_schedule="constant",
                                     lr=1e-4, batch_size=case.batch, seed=0,
                                     optimizer="sgd", progress=False, backend="sparse")
    measure(fn, f"dynamic {case.id}", contender=dynamic_contender, sizes=list(case.sizes),
            sparsity=case.sparsity, batch=case.batch, samples=case.samples,
            update_every=every)


def test_threads(measure, rng, threads_case, threads_contender):
    """A dense product and a parallel CSR product, alternating, as in a model that mixes
    a small dense layer with a large pruned one."""
    case = threads_case
    W, b, X, layer = _layer(case, rng)
    n_dense = case.shape[0] // 4
    Wd = rng.standard_normal((n_dense, n_dense)).astype(case.dtype)
    xd = rng.standard_normal((n_dense, case.batch)).astype(case.dtype)
    dense_out = np.empty_like(xd)
    xt = _feature_major(X)
    out = aligned_empty((case.shape[1], case.batch), case.dtype)

    def pair():
        np.matmul(Wd, xd, out=dense_out)
        layer.forward_fm(xt, out, IDENTITY)

    if threads_contender == "single-threaded-blas":
        def fn():
            with spp.single_threaded_blas():
                pair()
    elif threads_contender == "dense-alone":
        def fn():
            np.matmul(Wd, xd, out=dense_out)
    elif threads_contender == "csr-alone":
        def fn():
            layer.forward_fm(xt, out, IDENTITY)
    else:
        fn = pair
    pair()
    assert_close(out.T, X @ W + b, case.dtype)
    measure(fn, f"threads {case.id}", contender=threads_contender, dense_shape=[n_dense] * 2,
            **_info(case, W, layer))


def _numpy_chain(weights, biases, X, sparse=False):
    """The forward pass a person writes: X @ W + b, ReLU, softmax at the end."""
    a = X
    for i, (W, b) in enumerate(zip(weights, biases)):
        a = a @ W + b
        if i < len(weights) - 1:
            a = np.maximum(a, 0)
    a = np.exp(a - a.max(axis=1, keepdims=True))
    return a / a.sum(axis=1, keepdims=True)


def test_model(measure, rng, model_case, model_contender):
    """Whole-model inference (class probabilities) of a pruned MLP; the model's own
    edges (transposes) are part of ``csr``."""
    case, sparse_contender = model_case, model_contender
    model = spp.MLP(case.sizes, dtype=case.dtype, seed=0)
    spp.prune.magnitude(model, case.sparsity)
    X = rng.standard_normal((case.batch, case.sizes[0])).astype(case.dtype)
    weights = [np.array(layer.weight) for layer in model.layers]
    biases = [layer.bias for layer in model.layers]
    if sparse_contender == "dense":
        fn = lambda: _numpy_chain(weights, biases, X)  # noqa: E731
    elif sparse_contender == "dense-masked":
        masks = [layer.mask for layer in model.layers]
        fn = lambda: _numpy_chain([W * m for W, m in zip(weights, masks)], biases, X)  # noqa: E731
    elif sparse_contender == "scipy":
        sparse_weights = [sp.csr_array(W) for W in weights]
        fn = lambda: _numpy_chain(sparse_weights, biases, X)  # noqa: E731
    else:
        smodel = model.to_sparse()  # backend="auto": the warm-up call settles each layer
        fn = lambda: smodel.predict_proba(X)  # noqa: E731
    assert_close(fn(), model.predict_proba(X), case.dtype)
    total, active = model.count_parameters()
    measure(fn, f"model {case.id}", contender=sparse_contender, sizes=list(case.sizes),
            sparsity=case.sparsity, batch=case.batch, dtype=case.dtype, active=active,
            total=total, flop=2 * (active - sum(case.sizes[1:])) * case.batch)


def test_quantized(measure, rng, quantized_case, quantized_contender):
    """One layer's forward on feature-major X: float CSR against 8- and 4-bit codes.
    Each is checked against X @ W + b with its own weights (the quantized ones for q8
    and q4)."""
    case = quantized_case
    W, b, X, layer = _layer(case, rng)
    if quantized_contender != "csr":
        layer = spp.QuantizedLinear.from_layer(layer, int(quantized_contender[1:]))
    xt = _feature_major(X)
    out = aligned_empty((case.shape[1], case.batch), case.dtype)
    fn = lambda: layer.forward_fm(xt, out, IDENTITY)  # noqa: E731
    fn()
    assert_close(out.T, X @ layer.to_dense() + layer.bias, case.dtype)
    measure(fn, f"quantized {case.id}", contender=quantized_contender,
            **dict(_info(case, W, layer), bytes_per_nonzero=layer.nbytes() / max(layer.nnz, 1)))


def test_quantized_public(measure, rng, quantized_case, quantized_contender):
    """The same, as users call it: ``layer.forward(X)`` on sample-major X, each call
    right after a dense NumPy product (as ``public ...``)."""
    case = quantized_case
    W, b, X, layer = _layer(case, rng)
    layer.backend = "sparse"
    if quantized_contender != "csr":
        layer = spp.QuantizedLinear.from_layer(layer, int(quantized_contender[1:]))
    Wd = np.ascontiguousarray(W)
    fn = lambda: layer.forward(X)  # noqa: E731
    assert_close(fn(), X @ layer.to_dense() + layer.bias, case.dtype)
    measure(fn, f"quantized-public {case.id}", after=lambda: X @ Wd + b,
            contender=quantized_contender,
            **dict(_info(case, W, layer), bytes_per_nonzero=layer.nbytes() / max(layer.nnz, 1)))
