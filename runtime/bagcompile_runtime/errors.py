"""Exceptions raised by bagcompile-runtime.

Every error derives from :class:`BagcompileRuntimeError` (catch-all) and also from the builtin a
caller would naturally expect (``ValueError`` for bad data, ``ImportError`` for a missing engine),
so existing ``except ValueError`` code keeps working.
"""


class BagcompileRuntimeError(Exception):
    """Base class of every error raised by bagcompile-runtime."""


class InvalidInputError(BagcompileRuntimeError, ValueError):
    """The data passed to a session does not fit the model (shape, features, lengths, NaN...).

    ``row`` is the index (in the call's batch) of the row at fault, where one row is.
    """

    def __init__(self, message, row=None):
        super().__init__(message)
        self.row = row


class ModelFormatError(BagcompileRuntimeError, ValueError):
    """The file is missing, unreadable, not ONNX, or not a bagcompile ensemble we can read."""


class ProviderError(BagcompileRuntimeError, RuntimeError):
    """The requested execution provider is unknown or onnxruntime did not grant it."""


class MissingEngineError(BagcompileRuntimeError, ImportError):
    """onnxruntime (the engine that runs the graph) is not installed."""


MISSING_ENGINE_MESSAGE = (
    "onnxruntime is not installed: pip install 'bagcompile-runtime[cpu]' "
    "(or [gpu] for CUDA; never both)"
)
