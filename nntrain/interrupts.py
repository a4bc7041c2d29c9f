"""Ctrl-C and SIGTERM during `fit`: noted while a run is set up and acted on at safe points,
then, while it trains or tests, turned into a stop after the steps running now (a checkpoint
saved). Raised from a handler at once, a KeyboardInterrupt can land inside JAX's callbacks,
which swallow it. A second Ctrl-C always stops at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from typing import Any

from rich.console import Console


class Interrupts:
    """Ctrl-C and SIGTERM noted while a run is set up, acted on at `check()`: raised at once,
    a KeyboardInterrupt can land inside JAX's or the garbage collector's callbacks, which
    swallow it, and training would go on. A second Ctrl-C raises at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupts(enabled: bool = True):
    """An `Interrupts` that notes the signals inside the block (on the main thread only: a
    signal handler can be set nowhere else)."""
    interrupts = Interrupts()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield interrupts
        return
    previous = {s: signal.signal(s, interrupts.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupts
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def stop_on_signals(fitter, console: Console, doing: str = "stopping after the current steps",
                    say: bool = True):
    """Ctrl-C or SIGTERM (a cluster preempting the job): noted in `fitter.stop_signal`, which
    stops training after the chunk running now (with a checkpoint), or the test evaluation
    after its part running now (`doing` says which). Raised from the handler instead, a
    KeyboardInterrupt could land inside JAX's callbacks (swallowed) or leave device work
    running as Python exits (a crash). A second Ctrl-C stops at once. With `say=False` the
    stop is not announced (a tune worker, whose parent process announced it)."""

    def handle(signum, frame):
        if fitter.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        fitter.request_stop(signum)
        if say:
            console.print(f"[yellow]{signal.Signals(signum).name}: {doing} (Ctrl-C again to "
                          "stop at once)[/]", soft_wrap=True)

    with signals_handled_by(handle):
        yield


@contextlib.contextmanager
def signals_handled_by(handle: Callable[[int, Any], None]):
    """Ctrl-C and SIGTERM go to `handle` inside the block."""
    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
