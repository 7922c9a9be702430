"""The one root of every error this project raises on purpose (`ProxySearchError`), and the trainer's own.

A caller that reports errors catches `ProxySearchError` (the CLI turns it into one line and exit code 2); one that
must tell them apart catches the subclass. Each subclass also derives from the built-in it always was (ValueError,
RuntimeError), so nothing that caught those before misses them now. Torch-free: the driver imports it too.
"""

from __future__ import annotations


class ProxySearchError(Exception):
    """Something a user can fix, said in one message that names the file, field or value at fault."""


class ConfigError(ProxySearchError, ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names its field path."""


class DataError(ProxySearchError, RuntimeError):
    """The dataset cannot be read or does not fit the config; the message names the file or folder."""


class ModelError(ProxySearchError, ValueError):
    """An architecture, weights file or architecture/CAM combination that cannot be used; the message says why and
    `field` which setting to change."""

    def __init__(self, message: str, field: str = "architecture") -> None:
        super().__init__(message)
        self.field = field


class TrialError(ProxySearchError, RuntimeError):
    """The trial cannot go on (its loss became NaN, its folder holds another trial…); the message is the reason."""


class FolderError(DataError):
    """An image folder cannot make a trial; the message says why."""
