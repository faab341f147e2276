"""Collects nodes and initializers under hierarchical names; the graph is assembled once at the end.

Every name is made here: nodes ``m3/l1/fw/LSTM`` (member 3, layer 1, forward direction), tensors
``m3.l1.fw.W``; kept short because names are a visible share of a small model's file. Weights are
added once and referenced by name, so no tensor is stored twice.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
from onnx import TensorProto, helper, numpy_helper


class GraphRecorder:
    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self._scope: list[str] = []
        self._used: set[str] = set()
        self._constants: dict[tuple, str] = {}

    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    def tensor_name(self, label: str) -> str:
        return self._unique(".".join([*self._scope, label]))

    def weight(self, label: str, array: np.ndarray) -> str:
        """Add an initializer under the current scope; returns its name."""
        name = self.tensor_name(label)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def constant(self, values, dtype=np.int64) -> str:
        """A small shared constant (shape vectors, axes); identical ones are stored once."""
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            self._constants[key] = self._unique(f"const.{len(self._constants)}")
            self.initializers.append(numpy_helper.from_array(array, self._constants[key]))
        return self._constants[key]

    def op(self, op_type: str, inputs: Sequence[str], n_outputs: int = 1, label: str | None = None,
           outputs: Sequence[str] | None = None, **attrs) -> str | list[str]:
        """Record one node; returns its output name (or names when ``n_outputs > 1``)."""
        label = label or op_type
        node_name = self._unique("/".join([*self._scope, label]))
        if outputs is None:
            outputs = [self.tensor_name(f"{label}.out{i}" if n_outputs > 1 else label)
                       for i in range(n_outputs)]
        else:
            self._used.update(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=node_name, **attrs))
        return outputs[0] if len(outputs) == 1 else list(outputs)

    # Opset-dependent forms live here so graph code stays opset-agnostic.
    def reduce(self, op_type: str, x: str, axis: int, keepdims: int = 0, label: str | None = None) -> str:
        """Reduce* over one axis: axes became an input in opset 13 (ReduceSum) or 18 (the others)."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.constant([axis])], keepdims=keepdims, label=label)
        return self.op(op_type, [x], axes=[axis], keepdims=keepdims, label=label)

    def reduce_mean(self, x: str, axis: int, keepdims: int = 0, label: str = "ReduceMean") -> str:
        return self.reduce("ReduceMean", x, axis, keepdims, label)

    def unsqueeze(self, x: str, axis: int, label: str = "Unsqueeze") -> str:
        return self.op("Unsqueeze", [x, self.constant([axis])], label=label)


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL
