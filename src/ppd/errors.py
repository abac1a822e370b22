"""The exception hierarchy of ppd.

Every error ppd raises on purpose derives from :class:`PPDError`, so callers can
catch one type; the CLI turns any of them into a one-line message and a non-zero
exit code. Each subclass also derives from the closest built-in exception
(``ValueError``, ``OSError``) so generic handlers keep working.
"""

from __future__ import annotations


class PPDError(Exception):
    """Base class of every error ppd raises deliberately."""


class InvalidImageError(PPDError, ValueError):
    """An image cannot be read or does not have a supported shape / dtype."""


class InvalidMaskError(PPDError, ValueError):
    """A mask is unreadable, of the wrong size, or not binary."""


class InvalidPromptError(PPDError, ValueError):
    """Point / box prompts are malformed: wrong shape, non-finite, outside the image."""


class CheckpointError(PPDError):
    """A model checkpoint is missing, tampered with, truncated or incompatible."""


class DataError(PPDError):
    """A dataset folder or manifest is missing, malformed or fails verification."""


class OutputError(PPDError, OSError):
    """An output path cannot be written."""


class CacheError(PPDError):
    """The embedding cache directory cannot be used."""


class ImageNotSetError(PPDError, RuntimeError):
    """A prediction was asked for before ``set_image``."""


class ConfigError(PPDError, ValueError):
    """A setting is invalid: an unknown method name, a count below one, ..."""


class PPDWarning(UserWarning):
    """Something works but deserves the user's attention (e.g. an agent checkpoint without an
    integrity hash). The CLI prints each as one line, ``ppd: warning: ...``."""
