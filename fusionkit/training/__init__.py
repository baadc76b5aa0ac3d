"""The training engine shared by every fusionkit model (see :func:`train_and_evaluate`)."""
from fusionkit.training.build import ModelBuildError, accepted_kwargs, build_model, model_description
from fusionkit.training.checkpoint import CheckpointError
from fusionkit.training.config import GLOBAL_DEFAULTS, TrainConfig
from fusionkit.training.engine import (PREDICTIONS_FILE, EvalOutput, RunResult, TrainerCallback, TrainerState,
                                      TrainingInterrupted, evaluate, train_and_evaluate)

__all__ = [
    "GLOBAL_DEFAULTS",
    "CheckpointError",
    "EvalOutput",
    "ModelBuildError",
    "PREDICTIONS_FILE",
    "RunResult",
    "TrainConfig",
    "TrainerCallback",
    "TrainerState",
    "TrainingInterrupted",
    "accepted_kwargs",
    "build_model",
    "evaluate",
    "model_description",
    "train_and_evaluate",
]
