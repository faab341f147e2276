"""bagcompile: bagged LSTM ensembles, trained in PyTorch, compiled into one ONNX graph.

Heavy modules (torch, onnx) load on first use, not at import.
"""
from ._version import __version__

__all__ = ["BaggedLSTMClassifier", "BaggedLSTMRegressor", "export_bag", "load_run", "__version__"]


def __getattr__(name):
    if name in ("BaggedLSTMClassifier", "BaggedLSTMRegressor"):
        from . import estimators

        return getattr(estimators, name)
    if name == "export_bag":
        from .compiler import export_bag

        return export_bag
    if name == "load_run":
        from .persistence import load_run

        return load_run
    raise AttributeError(f"module 'bagcompile' has no attribute {name!r}")
