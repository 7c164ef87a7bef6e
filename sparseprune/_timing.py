"""Timing for the choices the package makes by measurement (dense or CSR per layer)."""

import time

# Each contender is timed at least MIN_REPEATS and at most MAX_REPEATS times, as many as
# fit in about BUDGET seconds: a 10 us call gets enough repetitions that one interrupt
# cannot decide, a 20 ms call is not repeated for long.
MIN_REPEATS = 3
MAX_REPEATS = 50
BUDGET = 2e-3


def _once(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def best_times(calls, budget=BUDGET):
    """{name: seconds of the fastest call} for ``calls`` ({name: callable}).

    After a warm-up of each (a first call may compile or allocate), the contenders are
    timed in turn, round after round, so a slow moment of the machine hits all alike.
    """
    for call in calls.values():
        call()
    best = {name: _once(call) for name, call in calls.items()}
    rounds = int(budget / max(sum(best.values()), 1e-9))
    for _ in range(min(MAX_REPEATS, max(MIN_REPEATS, rounds)) - 1):
        for name, call in calls.items():
            best[name] = min(best[name], _once(call))
    return best


def batch_bucket(batch):
    """The power of two at or above ``batch``: choices measured at one batch size hold
    for its bucket."""
    return 1 << (batch - 1).bit_length()
