"""Map ``providers="auto" | "cpu" | "cuda" | [...]`` to onnxruntime providers, then check the grant.

Measured onnxruntime behaviour this module works around:

* ``get_available_providers()`` lists CUDA whenever onnxruntime-gpu is installed, even when the
  CUDA/cuDNN libraries are missing;
* a session asked for CUDA without those libraries silently runs on CPU, so only
  ``session.get_providers()`` tells what was granted. onnxruntime's *default* logger writes the
  reason (which library failed to load, which CUDA/cuDNN it needs) straight to file descriptor 2,
  two records per session, and no session option reaches that logger: :func:`native_stderr`
  captures them while a CUDA session is created, so the one warning or error can carry the reason;
* names that are unknown or unavailable only produce a ``UserWarning`` and a CPU session.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass

from .errors import ProviderError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
CHOICES = '"auto", "cpu", "cuda", or a list of onnxruntime provider names'


@dataclass(frozen=True)
class ProviderPlan:
    requested: list  # what is passed to onnxruntime: names or (name, options) tuples
    strict: bool  # True: raise if the first provider is not granted; False ("auto"): warn

    @property
    def wants_cuda(self) -> bool:
        return CUDA in self.names

    @property
    def names(self):
        return [p[0] if isinstance(p, tuple) else p for p in self.requested]


def plan_providers(providers, ort) -> ProviderPlan:
    available = ort.get_available_providers()
    if isinstance(providers, str):
        key = providers.lower()
        if key == "auto":
            cuda = CUDA in available
            return ProviderPlan([CUDA, CPU] if cuda else [CPU], strict=False)
        if key in ("cpu", "cuda"):
            providers = [CPU] if key == "cpu" else [CUDA, CPU]
        elif providers in ort.get_all_providers():
            providers = [providers]
        else:
            raise ProviderError(f"unknown providers {providers!r}: expected {CHOICES}")
    if not isinstance(providers, (list, tuple)) or not providers:
        raise ProviderError(f"unknown providers {providers!r}: expected {CHOICES}")
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    unknown = [n for n in names if n not in ort.get_all_providers()]
    if unknown:
        raise ProviderError(f"unknown provider(s) {unknown}: expected {CHOICES}")
    if names[0] not in available:
        hint = " (install bagcompile-runtime[gpu] instead of [cpu])" if names[0] == CUDA else ""
        raise ProviderError(
            f"{names[0]} is not available in this onnxruntime build "
            f"(available: {available}){hint}"
        )
    # Unavailable fallbacks after the first would only make onnxruntime warn: drop them.
    kept = [p for p, n in zip(providers, names) if n in available]
    return ProviderPlan(kept, strict=True)


def check_granted(plan: ProviderPlan, granted, stacklevel=2, reason: str = "") -> None:
    """Raise (explicit request) or warn once ("auto") when the first provider was not granted.
    ``reason``: onnxruntime's own account of the failure (see :func:`cuda_failure_reason`)."""
    wanted = plan.names[0]
    if wanted in granted:
        return
    if plan.strict:
        raise ProviderError(
            f"requested providers {plan.names} but onnxruntime granted {list(granted)}; "
            + (reason or "for CUDA check that the CUDA and cuDNN libraries match onnxruntime-gpu")
        )
    warnings.warn(
        f"{wanted} is listed by onnxruntime but could not be used "
        f"({reason or 'missing CUDA/cuDNN libraries?'}); running on CPU ({list(granted)})",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )


_FD2_LOCK = threading.Lock()  # one capture at a time: file descriptor 2 is process-wide


@contextlib.contextmanager
def native_stderr():
    """Collect what native code writes to file descriptor 2 meanwhile; yields a list that holds
    the text afterwards (bytes that are not UTF-8 survive as surrogates: see
    :func:`write_native_stderr`). Python's ``sys.stderr`` is flushed first and is not redirected
    unless it writes to descriptor 2 itself. Without a usable descriptor 2 nothing is captured."""
    captured = []
    with _FD2_LOCK:
        with contextlib.suppress(AttributeError, ValueError, OSError):  # None, closed, broken
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # descriptor 2 closed
            yield captured
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield captured
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                captured.append(sink.read().decode("utf-8", "surrogateescape"))


def write_native_stderr(text: str) -> None:
    """Give captured text back to descriptor 2, byte for byte; silently when it is closed."""
    data = text.encode("utf-8", "surrogateescape")
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(2, data):]


# A record of onnxruntime's default logger (colour codes removed) is one line: timestamp, then
# "[E:onnxruntime:Default, file:line function] message". Colour resets leave an empty line after it.
_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \[[EWIV]:onnxruntime:Default, ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _is_cuda_failure(line: str) -> bool:
    return bool(_RECORD.match(line)) and ("CUDA" in line or "providers_cuda" in line)


def _lines(text: str):
    """Lines of ``text`` (colour codes removed), a record that follows another source's unfinished
    line on the same line split off from it."""
    for line in _ANSI.sub("", text).splitlines(keepends=True):
        start = _RECORD.search(line)
        if start and start.start() > 0:
            yield line[:start.start()]
            line = line[start.start():]
        yield line


def cuda_failure_reason(text: str) -> str:
    """A one-line reason from onnxruntime's CUDA failure records, e.g. "libcublasLt.so.13: cannot
    open shared object file: No such file or directory; onnxruntime-gpu needs cuDNN 9.* and CUDA
    13.*" ("" when the text holds none)."""
    text = _ANSI.sub("", text)
    parts = []
    missing = re.search(r"with error: ([^\n]+)", text)
    if missing:
        parts.append(missing.group(1).strip())
    needs = re.search(r"Require (cuDNN \S+ and CUDA \S+?)\.?(?:\s|$)", text)
    if needs:
        parts.append(f"onnxruntime-gpu needs {needs.group(1)}")
    if not parts:
        failed = re.search(r"Failed to create CUDAExecutionProvider[^\n]*", text)
        if failed:
            parts.append(failed.group(0).strip()[:300])
    return "; ".join(parts)


def split_cuda_failure(text: str) -> tuple[str, str]:
    """(reason, everything else): onnxruntime's CUDA failure records are folded into the reason;
    every other line (another library's or thread's, other onnxruntime records) is handed back."""
    failures, rest, after_failure = [], [], False
    for line in _lines(text):
        if _is_cuda_failure(line):
            failures.append(line)
            after_failure = True
        elif after_failure and not line.strip():
            after_failure = False  # the blank line a record's colour reset leaves behind
        else:
            rest.append(line)
            after_failure = False
    return cuda_failure_reason("".join(failures)), "".join(rest)
