"""Measured choices: the timing helper and the Plan that keeps winners."""

import pickle
import threading
import time

import pytest

from sparseprune import _tuning
from sparseprune._tuning import Plan, batch_bucket, measure


def sleeper(log, name, seconds):
    def call():
        log.append(name)
        time.sleep(seconds)
    return call


@pytest.mark.parametrize("statistic", ["min", "median"])
def test_measure_interleaves_and_reduces(statistic):
    log = []
    calls = {"a": sleeper(log, "a", 1e-3), "b": sleeper(log, "b", 3e-3)}
    times = measure(calls, budget=0.0, statistic=statistic)
    # A warm-up each, a calibration call each (long enough: one call a repetition),
    # then MIN_ROUNDS rounds, round-robin.
    assert log == ["a", "b"] * 2 + ["a", "b"] * _tuning.MIN_ROUNDS
    assert 1e-3 <= times["a"] < times["b"]
    assert 3e-3 <= times["b"]


def test_measure_pauses_after_the_named_contenders_only():
    log = []
    calls = {"a": sleeper(log, "a", 0.0), "b": sleeper(log, "b", 0.0)}
    started = time.perf_counter()
    measure(calls, budget=0.0, pause_after=("a",), pause=0.02)
    assert time.perf_counter() - started >= 0.02 * _tuning.MIN_ROUNDS


def test_measure_repeats_short_calls_within_the_budget():
    counts = {"fast": 0}

    def fast():
        counts["fast"] += 1

    measure({"fast": fast}, budget=1e-3)
    # More calls than rounds: a microsecond call is repeated within each round.
    assert counts["fast"] > _tuning.MAX_ROUNDS // 10


@pytest.mark.parametrize("batch, bucket", [(1, 1), (2, 2), (3, 4), (64, 64), (65, 128)])
def test_batch_bucket(batch, bucket):
    assert batch_bucket(batch) == bucket


def test_plan_measures_once_per_bucket_and_keeps_the_faster():
    log = []
    plan = Plan()
    contenders = {"slow": sleeper(log, "slow", 2e-3), "fast": sleeper(log, "fast", 0.0)}
    assert plan.get("backend", 5) is None
    assert plan.choose("backend", 5, contenders) == "fast"
    calls = len(log)
    # Batch 7 is in 5's bucket (8): no second measurement.
    assert plan.choose("backend", 7, contenders) == "fast" and len(log) == calls
    assert plan.get("backend", 8) == "fast"
    assert plan.record("blas", 1, "free") == "free"
    assert plan.as_dict() == {"backend": {8: "fast"}, "blas": {1: "free"}}
    assert plan.winners("backend") == {"fast"}
    assert "fast" in repr(plan)
    plan.reset()
    assert plan.as_dict() == {} and plan.get("backend", 5) is None


def test_a_choice_measured_on_fewer_samples_holds_for_their_bucket_too():
    log = []
    plan = Plan()
    contenders = {"slow": sleeper(log, "slow", 2e-3), "fast": sleeper(log, "fast", 0.0)}
    assert plan.choose("backend", 3000, contenders, measured_at=512) == "fast"
    assert plan.as_dict() == {"backend": {512: "fast", 4096: "fast"}}
    # A bucket measured already keeps its own winner.
    plan.record("blas", 512, "single")
    plan.choose("blas", 3000, contenders, measured_at=512)
    assert plan.as_dict()["blas"] == {512: "single", 4096: "fast"}


def test_plan_measures_once_when_threads_ask_at_once(monkeypatch):
    """Eight threads ask for the same choice at once: it is measured once, under the
    plan's lock, and every thread gets the one winner."""
    measured = []

    def slow_measure(calls, budget):
        measured.append(sorted(calls))
        time.sleep(0.05)  # long enough for every thread to arrive meanwhile
        return {"a": 2.0, "b": 1.0}

    monkeypatch.setattr(_tuning, "measure", slow_measure)
    plan = Plan()
    barrier = threading.Barrier(8)
    results = []

    def ask():
        barrier.wait()
        results.append(plan.choose("d", 4, {"a": None, "b": None}))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["b"] * 8
    assert measured == [["a", "b"]]
    assert plan.as_dict() == {"d": {4: "b"}}


def test_a_plan_pickles_without_its_choices():
    """A pickled model (a scikit-learn estimator's, one sent to a worker) measures its
    new machine afresh; the lock is made anew."""
    plan = Plan()
    plan.record("backend", 64, "sparse")
    copy = pickle.loads(pickle.dumps(plan))
    assert copy.as_dict() == {} and plan.as_dict() == {"backend": {64: "sparse"}}
    assert copy.choose("backend", 64, {"dense": lambda: None}) == "dense"
