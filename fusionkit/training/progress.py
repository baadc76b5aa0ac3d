"""Progress of training runs through Python :mod:`logging`, so that it shows in any log, not only on a terminal.

Every run logs, on logger ``fusionkit.training`` at level INFO,

* one line per finished epoch: model, seed, ``epoch i/N``, train loss, the validation metric that selects the
  epoch (and the best so far), elapsed time and an ETA (mean epoch time × epochs left; early stopping may end
  the run sooner);
* ``resumed from epoch N, step S`` when a run continues from its checkpoint;
* a final summary: the selected epoch, its validation metric, the test MAE / Acc2, total time.

Progress bars (tqdm) are separate: they show only when stderr is a terminal, and ``quiet`` hides them; the log
lines do not depend on either. Like any library, fusionkit adds no handler of its own except a
:class:`logging.NullHandler`: route the ``fusionkit`` logger where you like, or call :func:`log_to_stderr` (the
command-line tools do, with ``--log-level``)::

    import logging
    logging.basicConfig(level=logging.INFO)   # or: fusionkit.training.progress.log_to_stderr("INFO")
"""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger("fusionkit.training")
logging.getLogger("fusionkit").addHandler(logging.NullHandler())

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_HANDLER_FLAG = "_fusionkit_stderr_handler"


def format_seconds(seconds: float) -> str:
    """``H:MM:SS`` (``0:00:07``)."""
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _TqdmAwareHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (it may be replaced after the handler was made), through
    ``tqdm.write`` while a progress bar is on screen, so that lines appear above the bars."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        try:
            from tqdm import tqdm

            if getattr(tqdm, "_instances", None):
                tqdm.write(self.format(record), file=self.stream)
                return
        except Exception:  # noqa: BLE001 - fall back to a plain write
            pass
        super().emit(record)


def log_to_stderr(level: str | int = "INFO") -> logging.Handler:
    """Send the ``fusionkit`` loggers' records at ``level`` and above to stderr, one plain line each.

    Called again, it replaces the handler it added before (never adds a second one).
    """
    if isinstance(level, str):
        if level.upper() not in LEVELS:
            raise ValueError(f"log level {level!r} is unknown; choose one of {', '.join(LEVELS)}")
        level = getattr(logging, level.upper())
    root = logging.getLogger("fusionkit")
    for old in [h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)]:
        root.removeHandler(old)
    handler = _TqdmAwareHandler(sys.stderr)
    setattr(handler, _HANDLER_FLAG, True)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    return handler


class RunProgress:
    """The log lines of one training run; the engine calls it at resume, at every epoch end and at the end.

    ``enabled=False`` (ranks other than 0 of a distributed run) logs nothing.
    """

    def __init__(self, model: str, *, seed: int, epochs: int, metric: str, enabled: bool = True) -> None:
        self.model, self.seed, self.epochs, self.metric, self.enabled = model, seed, epochs, metric, enabled
        self.prefix = f"{model} seed {seed}"

    def _info(self, message: str) -> None:
        if self.enabled:
            logger.info("%s: %s", self.prefix, message)

    def resumed(self, *, epoch: int, batches_done: int, steps_per_epoch: int, global_step: int) -> None:
        """``epoch``: 0-based epoch in progress; ``batches_done``: its batches already trained."""
        where = (f" (batch {batches_done}/{steps_per_epoch} of that epoch)" if batches_done else
                 f" ({epoch} of {self.epochs} epochs done)")
        self._info(f"resumed from epoch {epoch + 1}, step {global_step}{where}")

    def epoch_end(self, history: list, *, value: float, best_value: float, best_epoch: int) -> None:
        """``history``: the run's epoch records so far (the last one just finished, ``seconds`` each)."""
        entry = history[-1]
        elapsed = sum(h.get("seconds", 0.0) for h in history)
        left = self.epochs - entry["epoch"]
        eta = elapsed / len(history) * left
        self._info(f"epoch {entry['epoch']}/{self.epochs}  train loss {entry['train_loss']:.4f}  "
                   f"valid {self.metric} {value:.4f} (best {best_value:.4f} at epoch {best_epoch})  "
                   f"elapsed {format_seconds(elapsed)}  ETA {format_seconds(eta)}")

    def stopped_early(self, *, epoch: int, patience: int) -> None:
        self._info(f"stopped early after epoch {epoch}/{self.epochs}: no better valid {self.metric} for "
                   f"{patience} epochs")

    def finished(self, *, best_epoch: int, valid: dict, test: dict, history: list) -> None:
        total = sum(h.get("seconds", 0.0) for h in history)
        valid_value = valid.get(self.metric)
        shown = f"valid {self.metric} {valid_value:.4f}, " if isinstance(valid_value, (int, float)) else ""
        self._info(f"done: {len(history)} epochs in {format_seconds(total)}; selected epoch {best_epoch} "
                   f"({shown}test mae {test['mae']:.4f}, acc2 {100 * test['acc2_non0']:.1f})")
