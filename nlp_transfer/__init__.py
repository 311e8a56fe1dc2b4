"""nlp-transfer: transfer learning for text classification on Hugging Face checkpoints.

    from nlp_transfer import RecipeConfig, train
    cfg = RecipeConfig.from_yaml("recipes/rotten_tomatoes/minilm-full.yaml", ["train.epochs=1"])
    result = train(cfg)
    load_run(result.output_dir).predict(["a gorgeous, moving film"]).probabilities
"""

from .config import DataConfig, ModelConfig, OutputConfig, RecipeConfig, TrainConfig, TransferConfig
from .data import TextData, load_data
from .errors import ConfigError, DataError, ModelError, NLPTransferError
from .metrics import compute_metrics
from .modeling import TextClassifier
from .predict import Predictions, Predictor, load_run
from .train import RunResult, build_classifier, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "RecipeConfig", "ModelConfig", "DataConfig", "TransferConfig", "TrainConfig", "OutputConfig",
    "TextData", "load_data", "compute_metrics", "TextClassifier", "Predictor", "load_run", "train", "evaluate", "RunResult",
    "NLPTransferError", "ConfigError", "DataError", "ModelError", "__version__",
    "Predictions", "build_classifier",
]
