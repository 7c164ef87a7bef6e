"""spp.dask: a model applied to row-chunked dask arrays, on the threaded scheduler and on
a real LocalCluster (two worker processes, one thread each), against the model on the
whole array and the plain-NumPy reference; the model's one appearance in the graph;
the threads each task runs on; bad input. And the thread-safety contract the threaded
scheduler relies on: a SparseMLP serving eight Python threads at once.
"""

import contextlib
import io
import sys
import threading

import cloudpickle
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from threadpoolctl import OpenBLASController, ThreadpoolController, threadpool_info

import reference as ref
import sparseprune as spp
from helpers import random_model, tol
from sparseprune import _tuning
from sparseprune.app import predict as scoring
from sparseprune.app.cli import main

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

# The probes below run on the cluster's workers, which cannot import this test module:
# cloudpickle sends its functions by value instead.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_FEATURES = 20
DTYPES = ("float32", "float64")
KINDS = ("dense", "sparse")


@pytest.fixture(scope="module")
def models():
    """{(kind, dtype): model}: a 20-48-32-5 MLP with random biases, 70% pruned, and the
    same model made sparse."""
    built = {}
    for dtype in DTYPES:
        model = random_model([N_FEATURES, 48, 32, 5], dtype, seed=3)
        spp.prune.magnitude(model, 0.7)
        built["dense", dtype] = model
        built["sparse", dtype] = model.to_sparse()
    return built


def expected_proba(model, X):
    """The plain-NumPy forward pass, from the dense model's weights (the sparse model
    holds the same ones)."""
    return ref.predict_proba([layer.to_dense() for layer in model.layers],
                             [layer.bias for layer in model.layers], X)


def data(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, N_FEATURES))


def check_against_whole(model, X, dX, get=None):
    """spp.dask on dX equals the model on the whole of X and the NumPy reference."""
    proba = spp.dask.predict_proba(model, dX)
    labels = spp.dask.predict(model, dX)
    assert proba.chunks == (dX.chunks[0], (5,)) and labels.chunks == (dX.chunks[0],)
    assert proba.dtype == model.dtype and labels.dtype == np.int64
    got_proba, got_labels = dask.compute(proba, labels, scheduler=get)
    assert got_proba.dtype == model.dtype and got_labels.dtype == np.int64
    assert got_proba.shape == (len(X), 5) and got_labels.shape == (len(X),)
    if len(X):
        np.testing.assert_allclose(got_proba, model.predict_proba(X), **tol(model.dtype))
        np.testing.assert_allclose(got_proba, expected_proba(model, X), **tol(model.dtype))
        assert_array_equal(got_labels, model.predict(X))


# -- the threaded scheduler ----------------------------------------------------------------

CHUNKINGS = {"uneven": (37, 1, 100, 62), "one chunk": (200,), "empty": (0,)}


@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_threaded_scheduler_equals_the_whole_array(models, kind, dtype, chunks):
    X = data(sum(chunks))
    dX = da.from_array(X, chunks=(chunks, N_FEATURES))
    check_against_whole(models[kind, dtype], X, dX, get="threads")


@settings(max_examples=30)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=6),
       kind=st.sampled_from(KINDS), dtype=st.sampled_from(DTYPES),
       column_chunk=st.integers(1, N_FEATURES), transposed=st.booleans())
def test_any_chunking_any_layout(models, sizes, kind, dtype, column_chunk, transposed):
    """Random row chunks (empty ones included), feature columns split over chunks (they
    are joined), non-contiguous blocks (a transposed array's), and integer input."""
    n = sum(sizes)
    X = data(n, seed=n)
    if transposed:
        dX = da.from_array(np.ascontiguousarray(X.T), chunks=(column_chunk, sizes)).T
    else:
        dX = da.from_array(X, chunks=(tuple(sizes), column_chunk))
    check_against_whole(models[kind, dtype], X, dX, get="threads")


def test_integer_input_and_unknown_chunk_sizes(models):
    """Integers are converted like any numeric input; rows whose chunk sizes are unknown
    (a dask DataFrame's values, a boolean selection) keep them unknown."""
    model = models["sparse", "float64"]
    X = np.random.default_rng(1).integers(-3, 4, (90, N_FEATURES))
    dX = da.from_array(X, chunks=(30, N_FEATURES))
    assert_array_equal(spp.dask.predict(model, dX).compute(), model.predict(X))
    keep = da.from_array(np.arange(90) % 3 != 0, chunks=30)
    selected = dX[keep]
    assert np.isnan(selected.shape[0])
    proba = spp.dask.predict_proba(model, selected)
    assert np.isnan(proba.shape[0]) and proba.shape[1] == 5
    np.testing.assert_allclose(proba.compute(), model.predict_proba(X[np.arange(90) % 3 != 0]),
                               **tol(model.dtype))


class Regressor:
    """A stand-in for a regression model: ``predict`` gives values, no probabilities."""

    def __init__(self, n_outputs, dtype="float32"):
        self.n_features = N_FEATURES
        self.dtype = np.dtype(dtype)
        self.weight = np.random.default_rng(2).standard_normal((N_FEATURES, n_outputs or 1))
        self.n_outputs = n_outputs

    def predict(self, X):
        values = (np.asarray(X, np.float64) @ self.weight).astype(self.dtype)
        return values if self.n_outputs else values[:, 0]


@pytest.mark.parametrize("n_outputs", [0, 3], ids=["one value", "three values"])
def test_a_regressors_values_take_their_shape_and_dtype_from_the_model(n_outputs):
    model = Regressor(n_outputs)
    X = data(50)
    values = spp.dask.predict(model, da.from_array(X, chunks=(20, N_FEATURES)))
    tail = (3,) if n_outputs else ()
    assert values.shape == (50, *tail) and values.dtype == np.float32
    assert values.chunks == ((20, 20, 10), *((3,),) * bool(n_outputs))
    assert_array_equal(values.compute(scheduler="threads"), model.predict(X))
    with pytest.raises(AttributeError, match="predict_proba"):
        spp.dask.predict_proba(model, da.from_array(X, chunks=20))


# -- the model in the graph, and the threads a task runs on ------------------------------


def appearances(graph, model):
    """How many times ``model``, or the object carrying it through the graph, is
    serialized when every task of ``graph`` is."""
    count = 0

    def carries(obj):
        attrs = getattr(obj, "__dict__", None)
        return obj is model or isinstance(attrs, dict) and attrs.get("model") is model

    class Counter(cloudpickle.Pickler):
        def persistent_id(self, obj):
            nonlocal count
            if carries(obj):
                count += 1
                return "model"  # counted, not descended into
            return None

    for task in dict(graph).values():
        Counter(io.BytesIO()).dump(task)
    return count


@pytest.mark.parametrize("kind", KINDS)
def test_the_model_appears_once_in_the_graph(models, kind):
    model = models[kind, "float32"]
    dX = da.from_array(data(400), chunks=(50, N_FEATURES))
    result = spp.dask.predict_proba(model, dX)
    graph = result.__dask_graph__()
    assert len(dict(graph)) == 8 + 1 + 8  # X's chunks, the model, the scored blocks
    assert appearances(graph, model) == 1
    (optimized,) = dask.optimize(result)
    assert appearances(optimized.__dask_graph__(), model) == 1


def test_a_sparse_model_travels_as_its_file_with_its_backends(models):
    """A SparseMLP does not pickle (its plans hold locks); in the graph it travels as its
    .npz, each layer's backend kept, its measured plans not (a worker measures its own)."""
    model = models["dense", "float64"].to_sparse(backend="sparse")
    model.layers[1].backend = "dense"
    model.predict(data(70))
    assert model.plans()["model"]  # measured here: the BLAS threads of a mixed model
    dX = da.from_array(data(10), chunks=5)
    graph = dict(spp.dask.predict(model, dX).dask)
    (key,) = [k for k in graph if str(k).startswith("_Shipped")]
    shipped = dask.get(graph, key)
    assert shipped.model is model
    arrived = cloudpickle.loads(cloudpickle.dumps(shipped)).model
    assert isinstance(arrived, spp.SparseMLP) and arrived is not model
    assert [layer.backend for layer in arrived.layers] == ["sparse", "dense", "sparse"]
    assert all(not plan for plan in arrived.plans().values())
    X = data(30)
    np.testing.assert_allclose(arrived.predict_proba(X), model.predict_proba(X),
                               **tol("float64"))


class Probe:
    """A stand-in model that records the threads Numba and BLAS give it."""

    n_features = N_FEATURES
    dtype = np.dtype("float64")

    def __init__(self):
        self.seen = []

    def predict(self, X):
        blas = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
        self.seen.append((numba.get_num_threads(), frozenset(blas)))
        return np.zeros(len(X), np.int64)


def test_each_task_runs_on_one_thread_unless_told():
    """On the threaded scheduler each task's kernels and BLAS get one thread, and the
    caller's settings are untouched after; ``threads=`` gives more; on the synchronous
    scheduler (the main thread, one task at a time) the process's own settings hold."""
    before = numba.get_num_threads()
    blas_before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    dX = da.from_array(data(64), chunks=(8, N_FEATURES))
    probe = Probe()
    spp.dask.predict(probe, dX).compute(scheduler="threads")
    # seen[0] is the call that reads the output's shape, here, before any task.
    assert len(probe.seen) == 9 and set(probe.seen[1:]) == {(1, frozenset({1}))}
    assert numba.get_num_threads() == before
    assert [p["num_threads"] for p in threadpool_info()
            if p["user_api"] == "blas"] == blas_before

    probe = Probe()
    spp.dask.predict(probe, dX, threads=2).compute(scheduler="threads")
    assert {n for n, _ in probe.seen[1:]} == {min(2, numba.config.NUMBA_NUM_THREADS)}

    probe = Probe()
    spp.dask.predict(probe, dX).compute(scheduler="sync")
    assert {n for n, _ in probe.seen[1:]} == {before}
    with dask.config.set({"sparseprune.threads": 1}):
        probe = Probe()
        spp.dask.predict(probe, dX).compute(scheduler="sync")
    assert {n for n, _ in probe.seen[1:]} == {1}


def blas_thread_counts():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


@pytest.mark.parametrize("hold", [lambda: spp.dask.task_threads(1), spp.single_threaded_blas],
                         ids=["task_threads", "single_threaded_blas"])
def test_blas_holds_restore_blas_when_they_overlap(hold):
    """BLAS's thread count is per process: two holds on two threads that overlap,
    entering and leaving in crossed order (two tasks; two predictions of a model that
    holds BLAS to one thread), leave it as it was when the last one ends."""
    before = blas_thread_counts()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    inside = []

    def first():
        with hold():
            first_in.set()
            second_in.wait()
            inside.append(blas_thread_counts())
        first_out.set()

    def second():
        first_in.wait()
        with hold():
            second_in.set()
            first_out.wait()
            inside.append(blas_thread_counts())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside == [[1] * len(before)] * 2
    assert blas_thread_counts() == before


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_is_refused_before_any_graph_is_built(models):
    model = models["sparse", "float32"]
    X = data(10)
    with pytest.raises(TypeError, match="X must be a dask array .* got ndarray"):
        spp.dask.predict(model, X)
    with pytest.raises(ValueError, match=r"X must be 2-D .* got shape \(10,\)"):
        spp.dask.predict(model, da.from_array(X[:, 0], chunks=5))
    with pytest.raises(ValueError, match="X has 7 features per sample, the model expects 20"):
        spp.dask.predict_proba(model, da.from_array(X[:, :7], chunks=5))
    with pytest.raises(TypeError, match="X must be a 2-D numeric array, got dtype <U1"):
        spp.dask.predict(model, da.from_array(np.full((10, N_FEATURES), "a"), chunks=5))
    with pytest.raises(TypeError, match="X must be real, got dtype complex128"):
        spp.dask.predict(model, da.from_array(X + 0j, chunks=5))
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        spp.dask.predict(model, da.from_array(X, chunks=5), threads=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_in_a_block_names_its_row_in_the_whole_array(models, bad):
    X = data(100)
    X[73, 4] = bad
    X[80, 0] = np.nan  # the same block (rows 60-89): its first bad row is named
    dX = da.from_array(X, chunks=(30, N_FEATURES))
    result = spp.dask.predict(models["dense", "float32"], dX)  # lazy: no error yet
    with pytest.raises(ValueError, match="X row 73 contains NaN or infinity"):
        result.compute(scheduler="sync")
    unknown = dX[da.from_array(np.ones(100, bool), chunks=30)]
    with pytest.raises(ValueError, match=r"X \(block 2; rows counted in the block\) row 13 "):
        spp.dask.predict(models["dense", "float32"], unknown).compute(scheduler="sync")


# -- a real cluster: two worker processes, one thread each -------------------------------


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def test_a_cluster_equals_the_whole_array(models, client):
    for (kind, dtype), model in models.items():
        for chunks in CHUNKINGS.values():
            X = data(sum(chunks), seed=len(chunks))
            check_against_whole(model, X, da.from_array(X, chunks=(chunks, N_FEATURES)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_quantized_model_scores_on_both_schedulers(models, client, dtype):
    """A quantized model travels as its version-2 file; its layers' backend is fixed
    (and read-only), the others' are set again on arrival."""
    model = models["sparse", dtype].quantize(8)
    X = data(137, seed=5)
    dX = da.from_array(X, chunks=((37, 100), N_FEATURES))
    check_against_whole(model, X, dX, get="threads")
    check_against_whole(model, X, dX)


def worker_state():
    """On a worker: the threads a task gets, and how the kernels were loaded."""
    from sparseprune.kernels import csr, dense, optim

    # The nanny starts workers with OPENBLAS_NUM_THREADS=1: BLAS's count is raised first,
    # or the check could not fail, and restored after the task. Setting it makes this
    # thread OpenBLAS's controlling one in threadpoolctl's eyes, which would make it
    # ignore the limit task_threads sets from its own thread: control is let go.
    def set_blas(n):
        for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
            lib.set_num_threads(n)
        OpenBLASController.clear_controlling_thread()

    set_blas(2)
    with spp.dask.task_threads():
        threads = numba.get_num_threads()
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    after = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
    set_blas(1)
    assert after == {2}, after
    stats = [d.stats for m in (csr, dense, optim) for d in vars(m).values()
             if isinstance(d, numba.core.registry.CPUDispatcher)]
    return threads, blas, sum(sum(s.cache_misses.values()) for s in stats), \
        sum(sum(s.cache_hits.values()) for s in stats)


def test_cluster_tasks_use_one_thread_and_the_cached_kernels(client):
    """Each task runs on the one thread its worker slot gives it (not a thread per core
    in every process), and every kernel came from the on-disk cache: none compiled."""
    results = client.gather([client.submit(worker_state, pure=False, workers=[w])
                             for w in client.nthreads()])
    for threads, blas, misses, hits in results:
        assert threads == 1 and blas and set(blas) == {1}
        assert misses == 0 and hits > 0


def test_the_model_travels_to_each_worker_once(models, client):
    model = models["sparse", "float32"]
    dX = da.from_array(data(600), chunks=(25, N_FEATURES))
    result = spp.dask.predict_proba(model, dX)
    (shipped,) = [k for k in dict(result.dask) if str(k).startswith("_Shipped")]
    np.testing.assert_allclose(result.compute(), model.predict_proba(data(600)),
                               **tol("float32"))

    def received(dask_worker, key=shipped):
        return sum(key in entry["keys"] for entry in dask_worker.transfer_incoming_log)

    counts = client.run(received)
    assert all(n <= 1 for n in counts.values()) and sum(counts.values()) <= len(counts) - 1


def test_chunks_streamed_through_a_cluster_come_back_in_order(models, client):
    model = models["dense", "float64"]
    X = data(300)
    chunks = [X[:100], X[100:100], X[100:101], X[101:]]
    got = list(spp.dask.predict_chunks(client, model, chunks, "predict_proba", in_flight=2))
    assert [g.shape for g in got] == [(100, 5), (0, 5), (1, 5), (199, 5)]
    np.testing.assert_allclose(np.concatenate(got), expected_proba(model, X), **tol("float64"))
    X[250, 3] = np.nan
    with pytest.raises(ValueError, match="data row 250 contains NaN"):
        list(spp.dask.predict_chunks(client, model, [X[:200], X[200:]], name="data"))
    with pytest.raises(ValueError, match="data has 3 features per sample"):
        list(spp.dask.predict_chunks(client, model, [X[:, :3]], name="data"))


def test_the_command_line_scores_on_the_cluster(models, client, tmp_path, capsys):
    """``sparseprune predict --scheduler ADDRESS``: the same answers as the model here,
    and a NaN named by its row, nothing written."""
    model = models["sparse", "float32"]
    model.save(tmp_path / "model.npz")
    X = data(250)
    np.save(tmp_path / "x.npy", X)
    args = ["predict", str(tmp_path / "model.npz"), str(tmp_path / "x.npy"), "--proba",
            "--batch-size", "64", "--scheduler", client.scheduler.address, "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "p.npy")]) == 0
    assert f", {client.scheduler.address})" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), model.predict_proba(X),
                               **tol("float32"))
    X[200, 0] = np.nan
    np.save(tmp_path / "x.npy", X)
    assert main([*args, "--out", str(tmp_path / "q.npy")]) == 2
    assert "x.npy row 200 contains NaN" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "p.npy", "x.npy"]


def test_workers_starts_a_local_cluster_of_processes_one_thread_each(models, client, tmp_path,
                                                                     monkeypatch):
    """``--workers N`` asks for N worker processes of one thread each (this module's
    cluster stands in, so that the test starts no second one)."""
    asked = []

    @contextlib.contextmanager
    def local_cluster(**kwargs):
        asked.append(kwargs)
        yield client.cluster

    monkeypatch.setattr(distributed, "LocalCluster", local_cluster)
    model = models["dense", "float64"].to_sparse()
    model.save(tmp_path / "model.npz")
    np.save(tmp_path / "x.npy", data(40))
    result = scoring.run(tmp_path / "model.npz", tmp_path / "x.npy", tmp_path / "l.npy",
                         workers=3, batch_size=16, progress=False)
    assert asked == [dict(n_workers=3, threads_per_worker=1, processes=True,
                          dashboard_address=None)]
    assert result.where == client.scheduler.address and result.rows == 40
    assert_array_equal(np.load(tmp_path / "l.npy"), model.predict(data(40)))


# -- thread safety -------------------------------------------------------------------------


def test_a_fresh_sparse_model_serves_eight_threads_with_the_single_threaded_answers(
        monkeypatch):
    """Eight Python threads predict at once on a SparseMLP whose choices are not yet
    measured, at batch sizes in seven buckets: every answer equals the single-threaded
    one, every choice was measured once (under its plan's lock), however many threads
    asked for it at the same moment, and BLAS has its thread count back afterwards.

    Equal to rounding, not bit for bit: BLAS's thread count is per process, so a thread
    that computes while another holds BLAS to one thread (its bucket's measured choice)
    runs the dense layer's product on one thread, and OpenBLAS's Haswell kernels round a
    256 x 256 x 17 float32 product differently on one thread and on two (on an AMD EPYC
    with AVX2; on an Intel Xeon the exact comparison held in every run). A race on a
    shared buffer would be far off."""
    blas_threads = blas_thread_counts()
    model = random_model([64, 256, 256, 10], "float32", seed=5)
    spp.prune.magnitude(model, 0.9, scope="layer")
    model.layers[1].mask = np.ones((256, 256), bool)  # a dense layer among sparse ones
    smodel = model.to_sparse()
    measured = []
    real_measure = _tuning.measure

    def counting_measure(calls, *args, **kwargs):
        measured.append(frozenset(calls))
        return real_measure(calls, *args, **kwargs)

    monkeypatch.setattr(_tuning, "measure", counting_measure)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((b, 64)).astype(np.float32)
               for b in (1, 3, 17, 64, 100, 300, 700)]
    barrier = threading.Barrier(8)
    answers, errors = {}, []

    def serve(k):
        try:
            barrier.wait()
            for i in np.random.default_rng(k).permutation(len(batches)):
                answers[k, i] = smodel.predict_proba(batches[i])
        except Exception as exc:  # reported below, with the thread's number
            errors.append((k, exc))

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    single = [smodel.predict_proba(X) for X in batches]
    for (k, i), answer in answers.items():
        np.testing.assert_allclose(answer, single[i], rtol=1e-5, atol=1e-7,
                                   err_msg=f"thread {k}, batch {len(batches[i])}")
    assert blas_thread_counts() == blas_threads
    plans = smodel.plans()
    backend_choices = sum(len(p.get("backend", {})) for p in plans.values())
    assert measured.count(frozenset({"sparse", "dense"})) == backend_choices == 3 * 7
    assert measured.count(frozenset({"free", "single"})) <= len(plans["model"]["blas"]) == 7
    np.testing.assert_allclose(single[-1], expected_proba(model, batches[-1]), **tol("float32"))
