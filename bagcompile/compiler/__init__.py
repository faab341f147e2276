"""Compiler: a trained bag -> one verified ONNX graph."""
from .ensemble import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, compile_bag
from .export import ExportResult, export_bag
from .verify import ParityError, ParityReport

__all__ = ["compile_bag", "export_bag", "ExportResult", "ParityError", "ParityReport",
           "DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET"]
