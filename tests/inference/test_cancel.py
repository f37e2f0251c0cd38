"""inference/cancel.py: a stop asked for an answer reaches the process generating it."""

from __future__ import annotations

import threading

from inference.cancel import CancelWatch, MemoryCancelFlags, cancel_flags

INTERVAL_SECONDS = 0.02


def test_a_stop_reaches_the_watch_once_from_its_own_daemon_thread() -> None:
    flags = cancel_flags()  # Redis on the services pass, this process's set otherwise
    watch = CancelWatch(flags, INTERVAL_SECONDS)
    stopped = threading.Event()
    callers: list[threading.Thread] = []

    def on_stop() -> None:
        callers.append(threading.current_thread())
        stopped.set()

    watch.watch(90_001, on_stop)
    watch.watch(90_002)
    flags.request(90_001)
    assert stopped.wait(5)
    assert watch.requested(90_001) and not watch.requested(90_002)
    [caller] = callers
    assert caller.name == "cancel-watch" and caller.daemon
    stopped.clear()
    assert not stopped.wait(10 * INTERVAL_SECONDS)  # called once, not at every check
    watch.unwatch(90_001)
    assert not watch.requested(90_001)


def test_a_failing_stop_callback_does_not_stop_the_watch() -> None:
    flags = MemoryCancelFlags()
    watch = CancelWatch(flags, INTERVAL_SECONDS)
    second = threading.Event()

    def broken() -> None:
        raise RuntimeError("the socket is gone")

    watch.watch(1, broken)
    flags.request(1)
    watch.watch(2, second.set)
    flags.request(2)
    assert second.wait(5)
    assert watch.requested(1) and watch.requested(2)
