"""A run's checkpoints: what the trainer (:mod:`fusionkit.training.engine`) keeps in its output directory and
reads back on ``resume=True``.

``last/`` holds the latest checkpoint (:class:`RunState` counters, model, optimizer, scheduler, grad scaler and
every generator's state), rewritten at each save under a fresh save number; ``best/`` the weights selected on
the validation split. The file formats and atomic writes are :mod:`fusionkit.training.checkpoint`'s, the
checksums :mod:`fusionkit.training.integrity`'s.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from fusionkit.training import checkpoint as ckpt
from fusionkit.training import distributed as dist_utils
from fusionkit.training import integrity
from fusionkit.training.config import TrainConfig
from fusionkit.training.precision import scaler_state

LAST_DIR = "last"
BEST_DIR = "best"
LOG_FILE = "log.jsonl"
RESULT_FILE = "result.json"
PREDICTIONS_FILE = "test_predictions.csv"
CURVE_FILE = "curve.png"
GENERATOR_PREFIX = "generator."


class RunState:
    """State of one training run (what a checkpoint stores)."""

    def __init__(self) -> None:
        self.epoch = 0  # 0-based epoch in progress
        self.batches_done = 0  # batches of that epoch already trained
        self.global_step = 0
        self.samples_seen = 0
        self.history: list = []
        self.best_value: float | None = None
        self.best_epoch = 0  # 1-based; 0 = none yet
        self.best_valid: dict = {}
        self.bad_epochs = 0
        self.stopped_early = False
        self.finished = False
        self.epoch_sums: dict = {}  # loss sums of the epoch in progress (local to this rank)
        self.epoch_started = 0.0
        self.epoch_seconds_before = 0.0  # time already spent on this epoch before a resume
        self.best_sha256: str | None = None  # checksum of best/model.safetensors (exact fallback, integrity.py)

    def counters(self) -> dict:
        return {k: getattr(self, k) for k in ("epoch", "batches_done", "global_step", "samples_seen", "history",
                                                  "best_value", "best_epoch", "best_valid", "bad_epochs",
                                                  "stopped_early", "finished", "epoch_sums")}

    def load_counters(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v)


def module_generators(model: torch.nn.Module) -> dict[str, torch.Generator]:
    """The ``torch.Generator`` that modules of ``model`` hold as their ``generator`` attribute (e.g. the
    restitution loss's triplet draws), by module path. The engine re-seeds them with every epoch's seed and
    keeps their states in checkpoints, exactly like the global generators."""
    return {name or "<root>": module.generator for name, module in dist_utils.unwrap(model).named_modules()
            if isinstance(getattr(module, "generator", None), torch.Generator)}


def identity_config(cfg: TrainConfig) -> dict:
    """Settings a resumed run must share with the interrupted one (everything that changes the result)."""
    d = cfg.to_dict()
    for k in ("out_dir", "resume", "log_every", "save_every", "save_interval", "quiet", "device", "num_threads",
              "cache_encoder"):
        d.pop(k)
    return d


def clear_run_dir(out_dir: Path) -> None:
    for name in (LAST_DIR, BEST_DIR):
        if (out_dir / name).exists():
            shutil.rmtree(out_dir / name)
    for name in (LOG_FILE, RESULT_FILE, PREDICTIONS_FILE, CURVE_FILE):
        (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def save_last(out_dir: Path, ctx, identity: dict, run: RunState, model, optimizer, scheduler, scaler=None) -> None:
    """Write ``last/``: tensor files under a fresh save number, then ``state.json`` naming them."""
    # every rank's generator states (dropout differs per rank), gathered to rank 0
    rng_tensors, rng_json = ckpt.capture_rng()
    rng_tensors.update({GENERATOR_PREFIX + name: g.get_state() for name, g in module_generators(model).items()})
    gathered = dist_utils.all_gather_objects(ctx, ({k: v.numpy() for k, v in rng_tensors.items()}, rng_json))
    if ctx.is_main:
        last = out_dir / LAST_DIR
        previous = ckpt.read_json(last / "state.json") if (last / "state.json").is_file() else {}
        number = (previous.get("save_number", 0) if isinstance(previous, dict) else 0) + 1
        files = {}
        state = {"format": ckpt.FORMAT_VERSION, "save_number": number, "identity": identity,
                 "run": run.counters(), "rng": [g[1] for g in gathered],
                 "epoch_seconds": run.epoch_seconds_before + time.perf_counter() - run.epoch_started}
        tensors = {f"rank{r}.{k}": torch.from_numpy(v) for r, g in enumerate(gathered) for k, v in g[0].items()}
        state["best_sha256"], state["sha256"] = run.best_sha256, {}
        if optimizer is not None:
            files["model"] = f"model-{number:06d}.safetensors"
            state["sha256"][files["model"]] = ckpt.save_model_weights(model, last / files["model"])
            opt_tensors, state["optimizer"] = ckpt.split_optimizer_state(optimizer)
            tensors.update(opt_tensors)
            state["scheduler"] = scheduler.state_dict()
            state["scaler"] = scaler_state(scaler)
        files["state"] = f"optim-{number:06d}.safetensors"
        state["sha256"][files["state"]] = ckpt.atomic_write_tensors(last / files["state"], tensors)
        state["files"] = files
        ckpt.write_checked_json(last / "state.json", state)
        for stale in last.glob("*.safetensors"):
            if stale.name not in files.values():
                integrity.remove_checked(stale)
    dist_utils.barrier(ctx)


def save_best(out_dir: Path, model, description: dict) -> str:
    """Write ``best/``: the selected weights and how to rebuild the model; returns the weights' sha256."""
    sha256 = ckpt.save_model_weights(model, out_dir / BEST_DIR / ckpt.MODEL_WEIGHTS)
    ckpt.write_checked_json(out_dir / BEST_DIR / ckpt.MODEL_JSON, description)
    return sha256


def checked_best(out_dir: Path, run: RunState, *, restore: bool) -> Path:
    """``best/model.safetensors`` after its checksum; when damaged, the exact copy in ``last/`` (same sha256 as
    recorded for best, :mod:`fusionkit.training.integrity`) replaces it, said on stderr; else CheckpointError."""
    last = out_dir / LAST_DIR
    alternatives = [last / name for name in sorted(p.name for p in last.glob("model-*.safetensors"))]
    return integrity.verify_or_fallback(out_dir / BEST_DIR / ckpt.MODEL_WEIGHTS, alternatives,
                                        [run.best_sha256] if run.best_sha256 else [], restore=restore,
                                        log=lambda m: print(f"[checkpoint] {m}", file=sys.stderr))


def load_last(out_dir: Path, identity: dict, run: RunState, model, optimizer, scheduler, rank: int, scaler=None):
    """Restore ``run``, the model, optimizer and scheduler from ``last/``; returns the RNG state to restore.
    Every file is checked (checksum, :mod:`fusionkit.schemas`) first; anything else that does not fit the model
    is one :class:`CheckpointError` naming ``state.json``."""
    path = out_dir / LAST_DIR / "state.json"
    try:
        return _load_last_checked(out_dir, identity, run, model, optimizer, scheduler, rank, scaler)
    except ckpt.CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError, OverflowError) as e:
        raise ckpt.CheckpointError(f"cannot restore the checkpoint {str(path)!r} ({type(e).__name__}: "
                                   f"{str(e)[:300]}); it is damaged or belongs to another version: resume from a "
                                   f"copy or use a new output directory") from None


def _load_last_checked(out_dir: Path, identity: dict, run: RunState, model, optimizer, scheduler, rank: int,
                       scaler=None):
    from fusionkit.schemas import check_state

    last = out_dir / LAST_DIR
    integrity.verify(last / "state.json")
    state = check_state(ckpt.read_json(last / "state.json"), last / "state.json")
    if state.get("format") != ckpt.FORMAT_VERSION:
        raise ckpt.CheckpointError(f"{last / 'state.json'} has format {state.get('format')!r}, expected "
                                   f"{ckpt.FORMAT_VERSION}")
    saved = state["identity"]
    saved_precision = saved.get("config", {}).get("precision", "fp32")
    if saved_precision != identity["config"]["precision"]:
        raise ckpt.CheckpointError(
            f"cannot resume from {str(last)!r}: it was trained with precision {saved_precision!r}, this run asks for "
            f"{identity['config']['precision']!r}; resume with precision {saved_precision!r} (--precision "
            f"{saved_precision}) or start in a new output directory")
    if saved != json.loads(json.dumps(identity)):
        diff = sorted(k for k in set(saved) | set(identity) if saved.get(k) != json.loads(json.dumps(identity)).get(k))
        detail = []
        for k in ("config",):
            if k in diff:
                a, b = saved[k], json.loads(json.dumps(identity[k]))
                detail += [f"{n}: checkpoint {a.get(n)!r} vs now {b.get(n)!r}" for n in sorted(set(a) | set(b))
                           if a.get(n) != b.get(n)]
        raise ckpt.CheckpointError(
            f"cannot resume from {str(last)!r}: it belongs to a different run ({', '.join(diff)} differ"
            + (f": {'; '.join(detail)}" if detail else "") + "); use the same settings or a new output directory")
    run.load_counters(state["run"])
    run.best_sha256 = state.get("best_sha256")
    run.epoch_seconds_before = float(state.get("epoch_seconds", 0.0)) if run.batches_done else 0.0
    tensors = ckpt.load_tensor_file(last / state["files"]["state"])
    if "model" in state["files"]:
        recorded = state.get("sha256", {}).get(state["files"]["model"])
        weights = integrity.verify_or_fallback(last / state["files"]["model"], [out_dir / BEST_DIR / ckpt.MODEL_WEIGHTS],
                                               [recorded] if recorded else [], restore=rank == 0,
                                               log=lambda m: print(f"[checkpoint] {m}", file=sys.stderr))
        ckpt.load_model_weights(model, weights, what=f"{identity['model']!r}")
        optimizer.load_state_dict(ckpt.merge_optimizer_state(tensors, state["optimizer"]))
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    prefix = f"rank{rank}."
    rng_tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return rng_tensors, state["rng"][rank]
