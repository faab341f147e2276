"""Run bagcompile ensembles (one ONNX file per bag) with numpy and onnxruntime only.

onnxruntime is imported when the first EnsembleSession is created, and PyTorch never is.
"""

from . import errors
from ._version import FORMAT_VERSION, __version__
from .errors import (
    BagcompileRuntimeError,
    InvalidInputError,
    MissingEngineError,
    ModelFormatError,
    ProviderError,
)
from .inputs import pad_sequences
from .metadata import EnsembleMetadata
from .session import EnsembleSession

__all__ = [
    "EnsembleSession", "EnsembleMetadata", "errors", "pad_sequences", "__version__",
    "FORMAT_VERSION", "BagcompileRuntimeError", "InvalidInputError", "MissingEngineError",
    "ModelFormatError", "ProviderError",
]
