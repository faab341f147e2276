"""Parse the bagcompile metadata stored in the ONNX file (``ModelProto.metadata_props``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from ._version import FORMAT_VERSION, __version__
from .errors import ModelFormatError

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class EnsembleMetadata:
    task: str
    format_version: int
    n_members: Optional[int] = None
    n_features: Optional[int] = None
    feature_names: tuple = ()
    classes: tuple = ()
    target_names: tuple = ()
    aggregation: Optional[str] = None
    members: tuple = ()
    input_length: Optional[int] = None
    versions: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    # onnxruntime does not expose ModelProto.producer_version, so it is read from versions.
    producer_version: Optional[str] = None


def read_metadata(session, source: str) -> EnsembleMetadata:
    """Read the metadata of an onnxruntime session; ``source`` names the file in errors."""
    return parse_metadata(session.get_modelmeta().custom_metadata_map, source)


def parse_metadata(props: dict, source: str = "model") -> EnsembleMetadata:
    if "bagcompile_format" not in props or "task" not in props:
        raise ModelFormatError(
            f"{source} is not a bagcompile ensemble (no 'bagcompile_format' metadata)"
        )
    fmt = _int(props, "bagcompile_format", source)
    if fmt > FORMAT_VERSION:
        raise ModelFormatError(
            f"{source} uses bagcompile format {fmt}, but bagcompile-runtime {__version__} reads "
            f"up to format {FORMAT_VERSION}: pip install -U bagcompile-runtime"
        )
    if fmt < 1:
        raise ModelFormatError(f"{source} has an invalid bagcompile_format {fmt}")
    task = props["task"]
    if task not in TASKS:
        raise ModelFormatError(f"{source} has unknown task {task!r} (expected one of {TASKS})")

    versions = _json(props, "versions", source, {}) or {}
    meta = EnsembleMetadata(
        task=task,
        format_version=fmt,
        n_members=_int(props, "n_members", source),
        n_features=_int(props, "n_features", source),
        feature_names=tuple(_json(props, "feature_names", source, [])),
        classes=tuple(_json(props, "classes", source, [])),
        target_names=tuple(_json(props, "target_names", source, [])),
        aggregation=props.get("aggregation"),
        members=tuple(_json(props, "members", source, [])),
        input_length=_json(props, "input_length", source, None),
        versions=versions,
        scores=_json(props, "scores", source, {}) or {},
        producer_version=versions.get("bagcompile") if isinstance(versions, dict) else None,
    )
    if task == "classification" and not meta.classes:
        raise ModelFormatError(f"{source} is a classification model without 'classes' metadata")
    if meta.feature_names and meta.n_features is not None:
        if len(meta.feature_names) != meta.n_features:
            raise ModelFormatError(
                f"{source} lists {len(meta.feature_names)} feature_names for "
                f"n_features={meta.n_features}"
            )
    return meta


def _int(props, key, source) -> Optional[int]:
    if key not in props:
        return None
    try:
        return int(props[key])
    except ValueError:
        raise ModelFormatError(
            f"{source}: metadata {key!r} should be an integer, got {props[key]!r}"
        ) from None


def _json(props, key, source, default) -> Any:
    if key not in props:
        return default
    try:
        return json.loads(props[key])
    except ValueError as exc:
        raise ModelFormatError(f"{source}: metadata {key!r} is not valid JSON ({exc})") from None
