"""Error types shared by the core, the readers, the console script and the widget.

Every error a user can cause is a :class:`SamlungError` whose message is one
line that names the thing at fault, the problem, and the fix.  The console
script prints it without a traceback; the widget shows it as a notification.
"""

from __future__ import annotations


class SamlungError(Exception):
    """Base class for every user-facing error of napari-samlung."""


class InputFileError(SamlungError, ValueError):
    """A file is missing, unreadable, corrupt or of an unsupported kind."""


class ShapeMismatchError(SamlungError, ValueError):
    """An image and its mask (or two arrays) do not line up."""


class PromptError(SamlungError, ValueError):
    """A prompt cannot be used: outside the image, degenerate, or unusable by the model."""


class ModelError(SamlungError, RuntimeError):
    """A model id, checkpoint or device problem."""


class WeightsUnavailableError(ModelError):
    """Weights are not on disk and could not be downloaded."""


class DatasetError(SamlungError, ValueError):
    """A dataset folder has no usable image/mask pairs."""


class UnsafeCheckpointError(ModelError):
    """A checkpoint holds code or objects that are not weights; refused unread."""


class OptionError(SamlungError, ValueError):
    """An option value or an environment variable that makes no sense."""


class SamlungWarning(UserWarning):
    """A warning the user can act on: shown by the console script as one line."""
