"""Shared command-line plumbing: every fusionkit CLI reports a usage error as one ``error: …`` line, exit 2."""
from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from typing import Callable, Iterator


class UsageError(Exception):
    """A bad command line or input the user can fix: printed as ``error: …`` with exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` parser whose errors raise :class:`UsageError` instead of exiting with a usage dump."""

    def error(self, message):
        self.print_usage(sys.stderr)
        raise UsageError(message)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; a :class:`UsageError` becomes one ``error:`` line on stderr and exit status 2, and a
    Ctrl-C is neither printed as a traceback nor lost (:func:`interrupts_not_lost`)."""
    try:
        with interrupts_not_lost():
            return main(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


@contextlib.contextmanager
def interrupts_not_lost() -> Iterator[None]:
    """Within this block, a Ctrl-C that lands while the interpreter runs a finalizer or a weakref callback (e.g.
    SQLAlchemy's clean-up of a session) is raised again in the main thread, instead of being printed as
    "Exception ignored in: …" with a traceback and then dropped, which would leave the command running."""
    previous = sys.unraisablehook
    lost, done = threading.Event(), threading.Event()

    def redeliver() -> None:
        import _thread
        import time

        while True:
            lost.wait()
            if done.is_set():
                return
            lost.clear()
            time.sleep(0.05)  # let the hook and the finalizer return first: the signal must land in ordinary code
            if done.is_set():  # the command has returned meanwhile: nothing is left to stop
                return
            _thread.interrupt_main()

    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            lost.set()  # nothing here may wait: a pending signal would be taken inside this hook
            return
        previous(unraisable)

    # started before any interrupt: starting a thread waits, and an interrupt taken there would be lost again
    threading.Thread(target=redeliver, name="fusionkit-interrupts", daemon=True).start()
    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous
        done.set()
        lost.set()
