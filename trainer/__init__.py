"""One full proxy-attention training trial (`run_trial`); knows nothing of Optuna or Ray."""

from trainer.config import ConfigError, TrialConfig
from trainer.loop import TrialError, TrialResult, run_trial

__all__ = ["ConfigError", "TrialConfig", "TrialError", "TrialResult", "run_trial"]
