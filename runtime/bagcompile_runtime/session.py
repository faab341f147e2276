"""EnsembleSession: load a bagcompile ``.onnx`` file and predict with it."""

from __future__ import annotations

import numbers
import os
import re

import numpy as np

from .errors import (
    MISSING_ENGINE_MESSAGE,
    InvalidInputError,
    MissingEngineError,
    ModelFormatError,
    ProviderError,
)
from .inputs import prepare
from .metadata import read_metadata
from .providers import (
    CPU,
    check_granted,
    native_stderr,
    plan_providers,
    split_cuda_failure,
    write_native_stderr,
)

# Contract: input/output name -> (onnx type, rank). See README "The model-file contract".
INPUTS = {"x": ("tensor(float)", 3), "lengths": ("tensor(int64)", 1)}
OUTPUTS = {
    "classification": {"probabilities": ("tensor(float)", 2), "label": ("tensor(int64)", 1)},
    "regression": {"prediction": ("tensor(float)", 2), "std": ("tensor(float)", 2)},
}
MEMBERS = ("tensor(float)", 3)  # optional output: [members, batch, classes or targets]
BATCH_AXIS = {"members": 1}  # every other output has the batch first


def _import_ort():
    # Imported lazily so `import bagcompile_runtime` stays cheap and a missing engine gets our
    # install hint instead of a bare ModuleNotFoundError.
    try:
        import onnxruntime
    except ImportError as exc:
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is not None:
            # Installed but broken, e.g. onnxruntime < 1.18 next to numpy 2.
            raise MissingEngineError(f"onnxruntime is installed but cannot be imported ({exc}); "
                                     "onnxruntime < 1.18 needs numpy < 2") from exc
        raise MissingEngineError(MISSING_ENGINE_MESSAGE) from exc
    return onnxruntime


def _short(exc) -> str:
    """One line of onnxruntime's error text, without its '[ONNXRuntimeError] : 7 : ...' prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return text.split("failed:", 1)[-1].strip()[:300]


def _open(ort, model, source, plan, options):
    def create(providers):
        # enable_fallback=0: onnxruntime's own fallback prints to stdout and, at run time,
        # swaps the providers of a live session, which is not safe with many threads.
        sess = ort.InferenceSession(model, sess_options=options, providers=providers,
                                    enable_fallback=0)
        sess.disable_fallback()  # older onnxruntime ignores the keyword above
        return sess

    try:
        return create(plan.requested)
    except Exception as first:  # onnxruntime's exceptions share no useful base class
        if plan.names != [CPU]:
            try:  # CPU works -> the provider was the problem, not the file
                sess = create([CPU])
            except Exception:
                pass
            else:
                if plan.strict:
                    raise ProviderError(
                        f"could not start {plan.names[0]}: {_short(first)}"
                    ) from first
                return sess  # "auto": check_granted warns about running on CPU
        hint = " (truncated, or not an ONNX file?)" if "protobuf" in str(first).lower() else ""
        raise ModelFormatError(
            f"cannot load {source} as an ONNX model: {_short(first)}{hint}"
        ) from None


def _open_cuda(ort, model, source, plan, options):
    """``_open`` for a plan with CUDA in it: (session, reason CUDA was not granted or "").

    Missing CUDA libraries only show in onnxruntime's C++ log on descriptor 2; that text is
    caught, its CUDA failure records become the reason our one warning/error gives, and any
    other text is passed on to stderr.
    """
    captured = []
    try:
        with native_stderr() as captured:
            session = _open(ort, model, source, plan, options)
    except BaseException:
        write_native_stderr(split_cuda_failure("".join(captured))[1])  # the error names the cause
        raise
    text, reason = "".join(captured), ""
    if plan.names[0] not in session.get_providers():
        reason, text = split_cuda_failure(text)
    write_native_stderr(text)  # CUDA granted: onnxruntime's records (e.g. nodes left on CPU) are news
    return session, reason


def _check_outputs_finite(output, x, lengths, start):
    """Finite inputs can still overflow inside the model (|x| near float32's 3.4e38 scaled or
    summed), and a model with non-finite weights gives NaN anyway: such a row's output is
    NaN/Inf. Say so instead of returning it (``output``: [batch, ...], the ensemble's own)."""
    if np.isfinite(output).all():
        return
    i = int(np.flatnonzero(~np.isfinite(output.reshape(len(lengths), -1)).all(axis=1))[0])
    largest = float(np.abs(x[i, : lengths[i]]).max())
    raise InvalidInputError(
        f"the model's outputs are not finite although the inputs are (row {start + i}, largest "
        f"|x| = {largest:.3g}): inputs too large for float32 arithmetic inside the model, or "
        "non-finite weights; pass allow_nonfinite=True to get NaN rows instead", row=start + i)


def _check_contract(session, meta, source) -> int:
    """Check the graph's inputs/outputs against the contract for its task; return n_features."""

    def check(args, expected, kind, exact=False):
        found = {a.name: a for a in args}
        if exact and set(found) != set(expected):
            raise ModelFormatError(
                f"{source}: graph {kind}s are {sorted(found)}, expected {sorted(expected)}"
            )
        for name, (dtype, rank) in expected.items():
            arg = found.get(name)
            if arg is None or arg.type != dtype or len(arg.shape) != rank:
                got = "missing" if arg is None else f"{arg.type} of rank {len(arg.shape)}"
                raise ModelFormatError(
                    f"{source}: {kind} {name!r} should be {dtype} of rank {rank}, got {got}"
                )
        return found

    inputs = check(session.get_inputs(), INPUTS, "input", exact=True)
    outputs = check(session.get_outputs(), OUTPUTS[meta.task], "output")
    if "members" in outputs:
        check([outputs["members"]], {"members": MEMBERS}, "output")

    dim = inputs["x"].shape[2]  # an int, or a str/None when the graph leaves it symbolic
    dim = dim if isinstance(dim, int) else None
    n_features = meta.n_features if meta.n_features is not None else dim
    if n_features is None:
        raise ModelFormatError(f"{source}: the number of features is unknown")
    if dim not in (None, n_features):
        raise ModelFormatError(
            f"{source}: metadata says {n_features} features, the graph takes {dim}"
        )
    if meta.task == "classification":
        n_classes = outputs["probabilities"].shape[1]
        if isinstance(n_classes, int) and n_classes != len(meta.classes):
            raise ModelFormatError(
                f"{source}: metadata lists {len(meta.classes)} classes, "
                f"the graph outputs {n_classes} probabilities"
            )
    return n_features


class EnsembleSession:
    """A bagcompile ensemble loaded in onnxruntime.

    ``providers``: ``"auto"`` (CUDA if usable, else CPU with one RuntimeWarning), ``"cpu"``,
    ``"cuda"`` (ProviderError unless CUDA is granted) or a list of onnxruntime providers (the first
    must be granted). Inputs larger than ``batch_size`` rows run in chunks to bound memory.
    One session may be shared by many threads.
    """

    def __init__(self, path, providers="auto", *, intra_op_threads=None, session_options=None,
                 allow_nonfinite=False, batch_size=4096):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        batch_size = int(batch_size)  # numpy integers too
        ort = _import_ort()
        if isinstance(path, (bytearray, memoryview)):
            path = bytes(path)
        if isinstance(path, bytes):  # a serialized model; not kept on self (it may be large)
            self.path, source = None, "model bytes"
        else:
            path = self.path = os.fspath(path)
            source = repr(path)
            if not os.path.isfile(path):
                raise ModelFormatError(f"model file not found: {path}")

        plan = plan_providers(providers, ort)
        options = session_options if session_options is not None else ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = int(intra_op_threads)

        if plan.wants_cuda:
            self.session, reason = _open_cuda(ort, path, source, plan, options)
        else:
            self.session, reason = _open(ort, path, source, plan, options), ""
        self.metadata = read_metadata(self.session, source)
        self.n_features = _check_contract(self.session, self.metadata, source)
        self.providers = list(self.session.get_providers())
        check_granted(plan, self.providers, stacklevel=2, reason=reason)
        self.batch_size = batch_size
        self.allow_nonfinite = allow_nonfinite
        self._classes = np.asarray(self.metadata.classes)
        self._output_names = [o.name for o in self.session.get_outputs()]

    # Convenience views of the metadata.
    task = property(lambda self: self.metadata.task)
    classes = property(lambda self: self.metadata.classes)
    feature_names = property(lambda self: self.metadata.feature_names)
    target_names = property(lambda self: self.metadata.target_names)
    n_members = property(lambda self: self.metadata.n_members)

    def __repr__(self):
        where = "<bytes>" if self.path is None else repr(self.path)
        return (f"EnsembleSession({where}, task={self.task!r}, n_members={self.n_members}, "
                f"providers={self.providers})")

    def run(self, X, lengths=None) -> dict:
        """Run the graph; return every output by name (``probabilities``/``label`` or
        ``prediction``/``std``, plus any extra output such as ``members``)."""
        return self._run(X, lengths, self._output_names)

    def _run(self, X, lengths, names):
        # Only locals here: onnxruntime's run is thread-safe, and so is this method.
        batch = prepare(X, self.n_features, lengths, self.allow_nonfinite)
        # The ensemble's own output (not 'members': a dropped member may be NaN there) tells
        # whether a row overflowed; asked for even when only 'label' is wanted.
        checked = "probabilities" if self.task == "classification" else "prediction"
        run_names = list(names) if checked in names or self.allow_nonfinite else [*names, checked]
        parts, start = [], 0
        for x, n in batch.chunks(self.batch_size):
            outputs = self.session.run(run_names, {"x": x, "lengths": n})
            if not self.allow_nonfinite:
                _check_outputs_finite(outputs[run_names.index(checked)], x, n, start)
            parts.append(outputs[: len(names)])
            start += len(n)
        if len(parts) == 1:
            return dict(zip(names, parts[0]))
        return {name: np.concatenate([p[i] for p in parts], axis=BATCH_AXIS.get(name, 0))
                for i, name in enumerate(names)}

    # --- IO binding: inputs and outputs stay on the device (CUDA) across repeated calls -------
    @property
    def device(self) -> str:
        """Where IO-bound tensors live: ``"cuda"`` when the session runs on CUDA, else ``"cpu"``."""
        return "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def device_inputs(self, X, lengths=None):
        """Validate and pad ``X`` once and copy it to the session's device: ``(x, lengths)`` as
        onnxruntime ``OrtValue``s for :meth:`run_on_device` (no chunking: one bound batch)."""
        ort = _import_ort()
        x, n = prepare(X, self.n_features, lengths, self.allow_nonfinite).slice(0, None)
        return (ort.OrtValue.ortvalue_from_numpy(x, self.device, 0),
                ort.OrtValue.ortvalue_from_numpy(n, self.device, 0))

    def run_on_device(self, x, lengths, names=None) -> dict:
        """Run with IO binding on device-resident inputs (from :meth:`device_inputs`); outputs are
        allocated by onnxruntime on the device (their shapes are dynamic) and returned as
        ``OrtValue``s; call ``.numpy()`` on one to copy it to the host."""
        names = list(names or self._output_names)
        binding = self.session.io_binding()  # one per call: bindings are not shared across threads
        binding.bind_ortvalue_input("x", x)
        binding.bind_ortvalue_input("lengths", lengths)
        for name in names:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        return dict(zip(names, binding.get_outputs()))

    def predict(self, X, lengths=None, return_std=False):
        """Classification: the class labels (taken from ``classes``). Regression: ``prediction``
        ``[batch, targets]``. ``return_std=True`` also returns the members' spread."""
        if self.task == "regression":
            out = self._run(X, lengths, ["prediction", "std"] if return_std else ["prediction"])
            return (out["prediction"], out["std"]) if return_std else out["prediction"]
        if return_std and "members" not in self._output_names:
            raise InvalidInputError(
                "return_std=True needs a 'members' output (per-member probabilities) and this "
                "classification model has none; use predict_proba for the soft vote"
            )
        out = self._run(X, lengths, ["label", "members"] if return_std else ["label"])
        labels = self._classes[out["label"]]
        return (labels, out["members"].std(axis=0)) if return_std else labels

    def predict_proba(self, X, lengths=None):
        """Soft-vote class probabilities ``[batch, classes]`` (columns in ``classes`` order)."""
        if self.task != "classification":
            raise InvalidInputError(
                f"predict_proba needs a classification model; this one is {self.task} "
                "(use predict)"
            )
        return self._run(X, lengths, ["probabilities"])["probabilities"]
