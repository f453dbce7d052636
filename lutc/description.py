"""What a compiled model is, in one place: made once from the frontend's :class:`ModelInfo` when it
is built, written as the sidecar by :meth:`ModelDescription.as_json` and read back by
:meth:`ModelDescription.from_json` (the one serializer both ways)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

import tvm

from . import __version__
from .frontend.model_info import ModelInfo, TensorInfo
from .frontend.positions import PositionLimit
from .frontend.prepare import PrepareReport
from .library import SIDECAR_FORMAT
from .weights import WeightLayout, WeightSpec


def _frozen(mapping: dict | None) -> MappingProxyType:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class ModelDescription:
    """A compiled model's inputs and outputs (with the dims the compiled code fixes), how each
    quantized node runs (``decisions``), the target and build options, the weights ``main`` reads
    after its inputs (``layout``), what graph preparation did, the input rules checked at run
    time, the position limit and, where a tuning log was applied, what it tuned."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    target: str
    """The target as TVM's JSON (:attr:`tvm_target` is the Target)."""
    options: MappingProxyType = field(default_factory=_frozen)
    decisions: MappingProxyType = field(default_factory=_frozen)
    """Quantized node -> how it runs (``lut fast w2g128``, ``dequantize path: ...``)."""
    layout: WeightLayout = field(default_factory=WeightLayout)
    position_limit: PositionLimit | None = None
    preparation: PrepareReport | None = None
    input_rules: tuple[str, ...] = ()
    tuning: MappingProxyType | None = None
    """``{"log": ..., "tuned": {kernel: seconds}, "default": {kernel: why}}`` of the applied log."""
    lutc_version: str = ""

    @classmethod
    def of_build(cls, info: ModelInfo, outputs: tuple[TensorInfo, ...], decisions: dict, target, options,
                 layout: WeightLayout, tuning: dict | None = None) -> ModelDescription:  # fmt: skip
        """The description of a build of the model ``info`` describes, whose compiled code fixes
        ``outputs``' dims."""
        return cls(
            inputs=info.inputs, outputs=outputs, target=str(target),
            options=_frozen(json.loads(json.dumps(asdict(options)))),  # tuples as JSON gives them back
            decisions=_frozen({str(k): str(v) for k, v in decisions.items()}),
            layout=WeightLayout(layout.weights),  # the stages ran at build time: the weights are theirs
            position_limit=info.position_limit, preparation=info.preparation, input_rules=tuple(info.input_rules),
            tuning=_frozen(tuning) if tuning else None, lutc_version=__version__,
        )  # fmt: skip

    @property
    def tvm_target(self) -> tvm.target.Target:
        return tvm.target.Target(json.loads(self.target))

    def as_json(self) -> dict[str, Any]:
        """The JSON-ready dict stored as the sidecar (the weight file's name and digests are added
        by the export)."""
        return {
            "format": SIDECAR_FORMAT,
            "lutc_version": self.lutc_version,
            "inputs": [asdict(i) for i in self.inputs],
            "outputs": [asdict(o) for o in self.outputs],
            "decisions": dict(self.decisions),
            "target": self.target,
            "options": dict(self.options),
            "weights": {"tensors": [w.as_dict() for w in self.layout.weights]},
            "position_limit": asdict(self.position_limit) if self.position_limit is not None else None,
            "preparation": self.preparation.as_dict() if self.preparation is not None else None,
            "input_rules": list(self.input_rules),
            **({"tuning": dict(self.tuning)} if self.tuning else {}),  # only a build with a tuning log has one
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelDescription:
        """The description a sidecar (checked by :func:`lutc.library.read_sidecar`) stores."""
        tensors = data["weights"].get("tensors", [])
        limit, preparation = data.get("position_limit"), data.get("preparation")
        return cls(
            inputs=tuple(TensorInfo(i["name"], tuple(i["shape"]), i["dtype"], i.get("index_limit"),
                                    i.get("window_rows")) for i in data["inputs"]),
            outputs=tuple(TensorInfo(o["name"], tuple(o["shape"]), o["dtype"]) for o in data["outputs"]),
            target=data["target"], options=_frozen(data["options"]), decisions=_frozen(data["decisions"]),
            layout=WeightLayout(tuple(WeightSpec(t["key"], tuple(t["shape"]), t["dtype"]) for t in tensors)),
            position_limit=PositionLimit(**limit) if limit else None,
            preparation=PrepareReport.from_dict(preparation) if preparation else None,
            input_rules=tuple(data.get("input_rules") or ()),
            tuning=_frozen(data["tuning"]) if data.get("tuning") else None,
            lutc_version=str(data.get("lutc_version", "")),
        )  # fmt: skip
