"""Shared command-line plumbing: every fusionkit CLI reports a usage error as one ``error: …`` line, exit 2."""
from __future__ import annotations

import argparse
import sys
from typing import Callable


class UsageError(Exception):
    """A bad command line or input the user can fix: printed as ``error: …`` with exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` parser whose errors raise :class:`UsageError` instead of exiting with a usage dump."""

    def error(self, message):
        self.print_usage(sys.stderr)
        raise UsageError(message)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; a :class:`UsageError` becomes one ``error:`` line on stderr and exit status 2."""
    try:
        return main(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
