"""Map ``providers="auto" | "cpu" | "cuda" | [...]`` to onnxruntime providers, then check the grant.

Measured onnxruntime behaviour this module works around:

* ``get_available_providers()`` lists CUDA whenever onnxruntime-gpu is installed, even when the
  CUDA/cuDNN libraries are missing;
* a session asked for CUDA without those libraries silently runs on CPU (C++ errors go to stderr),
  so only ``session.get_providers()`` tells what was granted;
* names that are unknown or unavailable only produce a ``UserWarning`` and a CPU session.
"""

from __future__ import annotations

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
    probing_cuda: bool  # "auto" trying CUDA: keep onnxruntime's C++ log quiet

    @property
    def names(self):
        return [p[0] if isinstance(p, tuple) else p for p in self.requested]


def plan_providers(providers, ort) -> ProviderPlan:
    available = ort.get_available_providers()
    if isinstance(providers, str):
        key = providers.lower()
        if key == "auto":
            cuda = CUDA in available
            return ProviderPlan([CUDA, CPU] if cuda else [CPU], strict=False, probing_cuda=cuda)
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
    return ProviderPlan(kept, strict=True, probing_cuda=False)


def check_granted(plan: ProviderPlan, granted, stacklevel=2) -> None:
    """Raise (explicit request) or warn once ("auto") when the first provider was not granted."""
    wanted = plan.names[0]
    if wanted in granted:
        return
    if plan.strict:
        raise ProviderError(
            f"requested providers {plan.names} but onnxruntime granted {list(granted)}; "
            "for CUDA check that the CUDA and cuDNN libraries match onnxruntime-gpu"
        )
    warnings.warn(
        f"{wanted} is listed by onnxruntime but could not be used (missing CUDA/cuDNN "
        f"libraries?); running on CPU ({list(granted)})",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )
