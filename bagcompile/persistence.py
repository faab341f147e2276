"""Saved runs: weights in safetensors, everything else in JSON. No pickle anywhere.

A run directory holds ``bag.json`` (architecture, transforms, labels, training record),
``members.safetensors`` (every member's weights, ``member_{k}.{parameter}``) and
``bootstrap.safetensors`` (each member's drawn sample indices). Each file is written atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_numpy_bytes
from safetensors.numpy import save as save_numpy_bytes
from safetensors.torch import load as load_torch_bytes
from safetensors.torch import save as save_torch_bytes

from ._version import __version__
from .atomic import atomic_write_bytes
from .bag import Bag, InputTransform, TargetTransform
from .bootstrap import BootstrapDraw
from .members import LSTMMember, MemberSpec

RUN_FORMAT = 1


class RunFormatError(ValueError):
    """A run directory is missing, incomplete or from an unknown format."""


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def save_member(path: Path, member: LSTMMember, meta: dict) -> None:
    tensors = {k: v.detach().contiguous() for k, v in member.state_dict().items()}
    meta = {"spec": member.spec.to_dict(), **meta}
    atomic_write_bytes(path, save_torch_bytes(tensors, metadata={"bagcompile": json.dumps(meta, default=_jsonable)}))


def load_member(path: Path) -> tuple[LSTMMember, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["bagcompile"])
    member = LSTMMember(MemberSpec(**meta["spec"]))
    member.load_state_dict(load_torch_bytes(Path(path).read_bytes()))
    return member.eval(), meta


def save_run(run_dir, bag: Bag, draws: list[BootstrapDraw], record: dict) -> Path:
    """Write a complete run; ``record`` holds the training facts (params, seeds, histories, scores)."""
    run_dir = Path(run_dir)
    tensors = {f"member_{k}.{name}": value.detach().contiguous()
               for k, m in enumerate(bag.members) for name, value in m.state_dict().items()}
    atomic_write_bytes(run_dir / "members.safetensors", save_torch_bytes(tensors))
    indices = {}
    for k, d in enumerate(draws):
        indices[f"member_{k}.in_bag"] = np.ascontiguousarray(d.in_bag, dtype=np.int64)
        indices[f"member_{k}.out_of_bag"] = np.ascontiguousarray(d.out_of_bag, dtype=np.int64)
    atomic_write_bytes(run_dir / "bootstrap.safetensors", save_numpy_bytes(indices))
    t = bag.target_transform
    config = {
        "run_format": RUN_FORMAT,
        "bagcompile_version": __version__,
        "task": bag.task,
        "feature_names": list(bag.feature_names),
        "classes": None if bag.classes is None else [c.item() if hasattr(c, "item") else c for c in bag.classes],
        "target_names": bag.target_names,
        "vote": bag.vote,
        "nonfinite": bag.nonfinite,
        "member_weights": bag.member_weights,
        "input_length": bag.input_length,
        "input_transform": {"mean": bag.input_transform.mean, "scale": bag.input_transform.scale,
                            "level_free": bag.input_transform.level_free,
                            "feature_indices": bag.input_transform.feature_indices},
        "target_transform": None if t is None else {"mean": t.mean, "scale": t.scale,
                                                    "reference_feature": t.reference_feature},
        "members": [m.spec.to_dict() for m in bag.members],
        "scores": bag.scores,
        "record": record,
    }
    atomic_write_bytes(run_dir / "bag.json", json.dumps(config, indent=1, default=_jsonable).encode())
    return run_dir


def load_run(run_dir) -> tuple[Bag, list[BootstrapDraw], dict]:
    run_dir = Path(run_dir)
    config_path = run_dir / "bag.json"
    if not config_path.is_file():
        raise RunFormatError(f"{run_dir} is not a bagcompile run (no bag.json); train one with "
                             "'bagcompile train'")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise RunFormatError(f"{config_path} is not valid JSON: {error}") from None
    if config.get("run_format", 0) > RUN_FORMAT:
        raise RunFormatError(f"{run_dir} was written by a newer bagcompile (run format "
                             f"{config['run_format']}); upgrade bagcompile")
    for name in ("members.safetensors", "bootstrap.safetensors"):
        if not (run_dir / name).is_file():
            raise RunFormatError(f"{run_dir} is incomplete: {name} is missing")
    weights = load_torch_bytes((run_dir / "members.safetensors").read_bytes())
    members = []
    for k, spec in enumerate(config["members"]):
        member = LSTMMember(MemberSpec(**spec))
        prefix = f"member_{k}."
        member.load_state_dict({n[len(prefix):]: v for n, v in weights.items() if n.startswith(prefix)})
        members.append(member.eval())
    indices = load_numpy_bytes((run_dir / "bootstrap.safetensors").read_bytes())
    draws = [BootstrapDraw(indices[f"member_{k}.in_bag"], indices[f"member_{k}.out_of_bag"])
             for k in range(len(members))]
    t = config["target_transform"]
    bag = Bag(
        task=config["task"], members=members,
        input_transform=InputTransform(**config["input_transform"]),
        feature_names=config["feature_names"], classes=config["classes"],
        target_transform=None if t is None else TargetTransform(**t),
        target_names=config["target_names"],
        member_weights=None if config["member_weights"] is None else np.asarray(config["member_weights"]),
        vote=config["vote"], nonfinite=config.get("nonfinite", "propagate"), input_length=config["input_length"], scores=config.get("scores", {}))
    return bag, draws, config["record"]
