"""One full proxy-attention training trial (`run_trial`); knows nothing of Optuna or Ray.

`trainer.run_trial`, `TrialResult` and `TrialError` load torch on first use, so that reading a config does not.
"""

from trainer.config import ConfigError, TrialConfig

__all__ = ["ConfigError", "TrialConfig", "TrialError", "TrialResult", "run_trial"]


def __getattr__(name: str):
    if name in ("TrialError", "TrialResult", "run_trial"):
        from trainer import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
