"""Measured choices: the one place where sparseprune times contenders and keeps winners.

Some choices cannot be made from first principles, only measured on the machine: whether
a sparse layer runs faster through the CSR kernels or as a dense BLAS product at a batch
size, whether a model that mixes both should hold BLAS to one thread, which backend
trains a layer faster. Each is made the same way: :func:`measure` times the contenders
interleaved on the real input, and a :class:`Plan` keeps the winner per batch-size
bucket, where it can be shown (``plan.as_dict()``) and reset (``plan.reset()``).

One vocabulary for how a layer computes: ``"sparse"`` (the CSR kernels), ``"dense"``
(BLAS on a dense weight) or ``"auto"`` (measured).

Thread pools. Interleave NumPy's OpenBLAS and Numba's parallel kernels on a 2-core
machine and each waits for cores the other's idle threads are spinning on. Measured (a
dense product and a CSR product alternating, ms a pair, against the two apart): 8.4
(0.6) at batch 1, 8.4 (1.5) at batch 64, 45.7 (22.2) at batch 256 (a 1024^2 dense layer,
a 4096^2 CSR layer at 90% sparsity; benchmark group ``threads``). Two causes:

- Numba's OpenMP workers spin after every kernel and slow the next BLAS call by
  milliseconds. ``sparseprune/__init__.py`` sets ``OMP_WAIT_POLICY=passive`` unless the
  user chose a policy (it must happen before the OpenMP runtime starts). With it: 0.76,
  1.48 and 38.4. This is the default fix.
- OpenBLAS's workers spin for a long while after every call, taking a core from a long
  CSR kernel that follows. Their timeout can only be set before NumPy loads. What a
  library can do is hold BLAS to one thread (then it runs on the calling thread and
  leaves nothing spinning): 0.42, 1.91 and 23.4 with it. But that also halves the dense
  layers' speed, which loses when they are the big ones. So ``SparseMLP`` measures, per
  batch-size bucket, whether holding BLAS to one thread pays for its mix of layers, and
  :func:`single_threaded_blas` offers it for any other loop.
"""

import contextlib
import math
import threading
import time

import numpy as np
from threadpoolctl import OpenBLASController, ThreadpoolController

from ._validation import check_choice

__all__ = ["BACKENDS", "CHOICE_BUDGET", "MEASURE_SAMPLES", "Plan", "batch_bucket",
           "blas_threads_held", "check_backend", "measure", "single_threaded_blas"]

#: How a layer computes: the CSR kernels, BLAS on a dense weight, or measured.
BACKENDS = ("auto", "sparse", "dense")

#: Seconds each contender of a choice is timed for: a 10 us call is repeated enough that
#: one interrupt cannot decide, a 20 ms call is not repeated for long.
CHOICE_BUDGET = 2e-3
# A measurement takes at least MIN_ROUNDS rounds (every contender once per round) and at
# most MAX_ROUNDS; a round's call of each contender is repeated to last about budget /
# ROUNDS, so that a microsecond call is not lost in the clock's overhead.
MIN_ROUNDS = 3
MAX_ROUNDS = 200
ROUNDS = 5
#: A choice for a larger batch is measured on its first MEASURE_SAMPLES samples. Both
#: contenders cost about the same per sample from a few hundred samples on (the CSR
#: kernels run whole register tiles, BLAS whole blocks): CSR over dense at 512 and at
#: 4,096 samples, float32, 1.30 and 1.30 (1024^2, 70% sparse), 1.99 and 1.99 (4096^2,
#: 80%), 2.81 and 3.54 (4096^2, 90%). The winner changes only where the two are within
#: the choice's own noise (at 60%: 0.82 and 1.04 at 1024^2, 1.05 and 0.91 at 4096^2).
#: Measuring every contender four or five times on the whole batch cost a model's first
#: call at batch 8,192 two to three seconds.
MEASURE_SAMPLES = 512


def check_backend(value, name="backend"):
    """``value`` if it is one of :data:`BACKENDS`."""
    return check_choice(value, name, BACKENDS)


def batch_bucket(batch):
    """The power of two at or above ``batch``: choices measured at one batch size hold
    for its bucket."""
    return 1 << (batch - 1).bit_length()


def _repeats(call, seconds):
    """Calls per repetition, so that one repetition lasts ``seconds`` at least."""
    start = time.perf_counter()
    call()
    elapsed = time.perf_counter() - start
    return max(1, min(1000, math.ceil(seconds / max(elapsed, 1e-9))))


def measure(calls, budget=CHOICE_BUDGET, statistic="min", pause_after=(), pause=0.0):
    """{name: seconds per call} of ``calls`` ({name: callable}).

    Each contender is warmed up first (a first call may compile or allocate); then the
    contenders are timed in turn, round after round, so that a slow moment of the machine
    hits all alike, until each has spent ``budget`` seconds (at least MIN_ROUNDS rounds,
    at most MAX_ROUNDS). ``statistic`` is "min" (the contender's own speed: for choices)
    or "median" (what a caller sees: for reports). After each repetition of the
    contenders named in ``pause_after`` the clock waits ``pause`` seconds.
    """
    reduce = {"min": min, "median": lambda s: float(np.median(s))}[statistic]
    for call in calls.values():
        call()
    numbers = {name: _repeats(call, budget / ROUNDS) for name, call in calls.items()}
    samples = {name: [] for name in calls}
    spent = dict.fromkeys(calls, 0.0)
    for rnd in range(MAX_ROUNDS):
        if rnd >= MIN_ROUNDS and min(spent.values()) >= budget:
            break
        for name, call in calls.items():
            number = numbers[name]
            start = time.perf_counter()
            for _ in range(number):
                call()
            elapsed = time.perf_counter() - start
            spent[name] += elapsed
            samples[name].append(elapsed / number)
            if pause and name in pause_after:
                time.sleep(pause)
    return {name: max(reduce(s), 1e-12) for name, s in samples.items()}


class Plan:
    """Choices made by measurement, each once: ``{decision: {batch bucket: winner}}``.

    ``choose`` returns the stored winner, or measures the contenders and stores the
    fastest. Thread-safe: a choice is measured once, under the plan's lock, and threads
    asking for it meanwhile wait for the result.
    """

    def __init__(self):
        self._lock = threading.RLock()
        self._choices = {}

    def get(self, decision, batch):
        """The winner of ``decision`` for ``batch``'s bucket, or None if not measured."""
        return self._choices.get((decision, batch_bucket(batch)))

    def choose(self, decision, batch, contenders, budget=CHOICE_BUDGET, measured_at=None):
        """The winner of ``decision`` for ``batch``'s bucket among ``contenders``
        ({name: callable}), measured on the first call and stored. ``measured_at``: the
        batch size the contenders run at, when it is smaller (MEASURE_SAMPLES); the
        winner is stored for its bucket too, unless that one was measured already."""
        key = (decision, batch_bucket(batch))
        winner = self._choices.get(key)
        if winner is None:
            with self._lock:
                winner = self._choices.get(key)
                if winner is None:
                    times = measure(contenders, budget)
                    winner = self._choices[key] = min(times, key=times.get)
                    if measured_at is not None:
                        self._choices.setdefault((decision, batch_bucket(measured_at)),
                                                 winner)
        return winner

    def record(self, decision, batch, winner):
        """Store ``winner`` for ``decision`` at ``batch``'s bucket without a contest (when
        only one contender applies); returns it."""
        with self._lock:
            self._choices[(decision, batch_bucket(batch))] = winner
        return winner

    def winners(self, decision):
        """Every winner stored for ``decision``."""
        return {w for (d, _), w in self._choices.items() if d == decision}

    def reset(self):
        """Forget every choice: the next call measures again."""
        with self._lock:
            self._choices.clear()

    def as_dict(self):
        """``{decision: {bucket: winner}}``, buckets in order."""
        shown = {}
        for decision, bucket in sorted(self._choices):
            shown.setdefault(decision, {})[bucket] = self._choices[(decision, bucket)]
        return shown

    def __getstate__(self):
        # A copy (pickled for a scikit-learn estimator, sent to a worker) starts with no
        # choices: they measured this machine at this moment. A lock does not pickle.
        return {}

    def __setstate__(self, state):
        self.__init__()

    def __repr__(self):
        return f"Plan({self.as_dict()})"


_controller = None
_controller_lock = threading.Lock()


def _threadpools():
    global _controller
    with _controller_lock:
        if _controller is None:
            # Built on first use, when NumPy's BLAS is loaded; 15 us per limit() after that.
            _controller = ThreadpoolController()
    return _controller


def _release_blas_control(force=False):
    # threadpoolctl 3.8 lets one Python thread at a time set a process-wide OpenBLAS's
    # thread count (the first to set it, until it lets go; the others' limits are
    # silently ignored). Older versions have no such owner, and nothing to release.
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=force)


class _BlasHold:
    """BLAS held to a thread count while any caller is inside.

    BLAS's thread count is per process. Callers on several Python threads enter and
    leave in any order, and nested limits restored in that order leave the wrong count
    behind: a limit taken while another is held saves the held count as the one to
    restore, so eight threads predicting at once left OpenBLAS on one thread for the
    rest of the process. So the first caller in sets the count and the last one out
    restores it; the callers in between share the count already held. Each of the two
    takes threadpoolctl's control of OpenBLAS for the moment it sets the count (under
    this hold's lock) and lets go after, whichever thread it runs on."""

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._limiter = None

    @contextlib.contextmanager
    def __call__(self, threads):
        with self._lock:
            if self._users == 0:
                _release_blas_control(force=True)
                self._limiter = _threadpools().limit(limits=threads, user_api="blas")
                _release_blas_control()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    _release_blas_control(force=True)
                    self._limiter.restore_original_limits()
                    _release_blas_control()
                    self._limiter = None


_blas_hold = _BlasHold()


def blas_threads_held(threads):
    """A context that holds every loaded BLAS to ``threads`` threads while any thread of
    the process is inside one (the first in sets the count, the last out restores the
    count from before; one entered while another is held runs at the held count)."""
    return _blas_hold(threads)


def single_threaded_blas():
    """Hold every loaded BLAS to one thread inside the block (for the whole process: the
    count is per process; see :func:`blas_threads_held`).

    Worth it around a loop whose parallel CSR layers take most of the time and whose
    dense products are small; see the module's notes and the ``threads`` benchmarks::

        with sparseprune.single_threaded_blas():
            smodel.predict(X)
    """
    return blas_threads_held(1)
