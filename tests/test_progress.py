"""Progress in any log: one line per epoch per run, a resume line and a summary through ``logging`` when stderr is
a file; the interrupt message said once; the precision stated in results.md."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fusionkit.training import TrainingInterrupted
from fusionkit.training.progress import RunProgress, format_seconds, log_to_stderr

ROOT = Path(__file__).resolve().parents[1]
# 32 training examples in batches of 8: 4 optimizer steps per epoch
RUN = ["--models", "text", "--dataset", "synthetic", "--seeds", "1", "--epochs", "2", "--batch-size", "8",
       "--max-samples", "32", "--device", "cpu", "--threads", "1", "--tiny-bert"]

# benchmarks.run that sends itself SIGINT once the checkpoint after epoch 1 is on disk
INTERRUPT_AFTER_EPOCH_1 = textwrap.dedent('''
    import os, signal, sys

    import benchmarks.run
    import fusionkit.training.engine as engine

    save_last, fired = engine._save_last, []

    def save_then_signal(out_dir, ctx, identity, run, *rest):
        save_last(out_dir, ctx, identity, run, *rest)
        if not fired and run.epoch == 1 and run.batches_done == 0:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    engine._save_last = save_then_signal
    sys.exit(benchmarks.run.main(sys.argv[1:]))
''')


def _run_to_file(args: list[str], log: Path, cwd: Path) -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with open(log, "w") as err:  # stderr is a file, not a terminal
        return subprocess.run([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=err, cwd=cwd, env=env,
                              timeout=300).returncode


EPOCH_LINE = re.compile(r"^text seed 0: epoch (\d)/2  train loss \d+\.\d{4}  valid mae \d+\.\d{4} \(best \d+\.\d{4} "
                        r"at epoch \d\)  elapsed \d:\d\d:\d\d  ETA \d:\d\d:\d\d$")


@pytest.mark.slow
def test_stderr_to_a_file_gets_one_line_per_epoch_then_a_resume_line(tmp_path):
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_AFTER_EPOCH_1)
    out = tmp_path / "out"
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    assert _run_to_file([str(script), *RUN, "--out", str(out)], first, ROOT) == 130
    lines = first.read_text().splitlines()
    assert [int(m.group(1)) for m in map(EPOCH_LINE.match, lines) if m] == [1], lines
    assert not any("\r" in line for line in lines)  # no progress bars in a file
    (stop,) = [line for line in lines if "interrupted" in line]
    assert stop.startswith("interrupted: training of 'text' interrupted after epoch 1; checkpoint saved in ")
    assert stop.count("resume") == 1 and stop.endswith("rerun the same command with --resume to continue")

    assert _run_to_file(["-m", "benchmarks.run", *RUN, "--out", str(out), "--resume"], second, ROOT) == 0
    lines = second.read_text().splitlines()
    assert "text seed 0: resumed from epoch 2, step 4 (1 of 2 epochs done)" in lines, lines
    assert [int(m.group(1)) for m in map(EPOCH_LINE.match, lines) if m] == [2], lines
    (done,) = [line for line in lines if line.startswith("text seed 0: done: 2 epochs in ")]
    assert re.search(r"selected epoch [12] \(valid mae \d\.\d{4}, test mae \d\.\d{4}, acc2 \d+\.\d\)$", done)
    assert "Precision: fp32 (no autocast)." in (out / "results.md").read_text()


@pytest.mark.slow
def test_log_level_warning_hides_the_progress_lines(tmp_path):
    log = tmp_path / "run.log"
    assert _run_to_file(["-m", "benchmarks.run", *RUN, "--epochs", "1", "--quiet", "--log-level", "warning",
                         "--out", str(tmp_path / "out")], log, ROOT) == 0
    assert not [line for line in log.read_text().splitlines() if line.startswith("text seed 0:")]


def test_run_progress_lines(caplog):
    progress = RunProgress("mhmf", seed=3, epochs=4, metric="mae")
    history = [{"epoch": 1, "train_loss": 1.5, "seconds": 10.0}, {"epoch": 2, "train_loss": 1.25, "seconds": 20.0}]
    with caplog.at_level(logging.INFO, logger="fusionkit.training"):
        progress.resumed(epoch=1, batches_done=3, steps_per_epoch=8, global_step=11)
        progress.epoch_end(history, value=0.9, best_value=0.8, best_epoch=1)
        RunProgress("mhmf", seed=3, epochs=4, metric="mae", enabled=False).epoch_end(
            history, value=0.9, best_value=0.8, best_epoch=1)
    assert [r.name for r in caplog.records] == ["fusionkit.training"] * 2
    assert caplog.messages == [
        "mhmf seed 3: resumed from epoch 2, step 11 (batch 3/8 of that epoch)",
        # 30 s over 2 epochs, 2 epochs left: ETA 30 s
        "mhmf seed 3: epoch 2/4  train loss 1.2500  valid mae 0.9000 (best 0.8000 at epoch 1)  elapsed 0:00:30  "
        "ETA 0:00:30"]


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 7.4, 61, 3600 + 125)] == ["0:00:00", "0:00:07", "0:01:01", "1:02:05"]


def test_log_to_stderr_adds_one_handler_and_checks_the_level():
    root = logging.getLogger("fusionkit")
    before = list(root.handlers)
    try:
        log_to_stderr("info")
        handler = log_to_stderr("WARNING")
        assert [h for h in root.handlers if h not in before] == [handler] and root.level == logging.WARNING
        with pytest.raises(ValueError, match="log level 'LOUD' is unknown"):
            log_to_stderr("LOUD")
    finally:
        for h in [h for h in root.handlers if h not in before]:
            root.removeHandler(h)
        root.setLevel(logging.NOTSET)


def test_interrupt_message_says_resume_once():
    from benchmarks.run import interrupt_message

    e = TrainingInterrupted("training of 'text' interrupted at epoch 1, step 2", Path("out/text/seed0/last"))
    assert "resume=True" in str(e)  # the Python API's hint …
    line = interrupt_message(e)  # … the command line replaces with its own
    assert line == ("interrupted: training of 'text' interrupted at epoch 1, step 2; checkpoint saved in "
                    "out/text/seed0/last; rerun the same command with --resume to continue")
    assert interrupt_message(KeyboardInterrupt()) == "interrupted: stopped; rerun the same command with --resume " \
                                                     "to continue"


def test_precision_line():
    from benchmarks.run import precision_lines

    assert precision_lines(None) == []
    assert precision_lines("fp32") == ["Precision: fp32 (no autocast)."]
    assert precision_lines("bf16")[0].startswith("Precision: bf16 autocast")
