"""Timing for the choices the package makes by measurement (dense or CSR per layer)."""

import time

# Best of this many calls, after one warm-up call.
REPEATS = 3


def best_time(call, repeats=REPEATS):
    """Seconds of the fastest of ``repeats`` calls of ``call()``, after a warm-up."""
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def batch_bucket(batch):
    """The power of two at or above ``batch``: choices measured at one batch size hold
    for its bucket."""
    return 1 << (batch - 1).bit_length()
