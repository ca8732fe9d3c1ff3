"""The REST API's request bodies, and the conversion of engine results into JSON.

Bodies refuse what the engine should never see: unknown fields (with the list of valid
ones), NaN and infinite numbers, out-of-range loop settings. Coordinates far outside the map
are refused by the engine itself, which knows the map's bounds.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from gapfill.filling import SETTING_BOUNDS
from gapfill.map_config import ParametricUMAPConfig
from gapfill.vec2text_config import Vec2TextConfig

T = TypeVar("T")


def _config_body(config_cls: type) -> type[BaseModel]:
    """A body with the config's fields (each optional, with its help sentence) and
    `background`; an unknown field is refused with the list of valid ones."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]

    def known_only(data: Any) -> Any:
        unknown = sorted(set(data) - set(names) - {"background"}) if isinstance(data, dict) else []
        if unknown:
            raise ValueError(f"unknown {config_cls.what} {unknown}; valid ones are {sorted(names)} and 'background'")
        return data

    fields = {f.name: (hints[f.name] | None, Field(None, description=f.metadata.get("help")))
              for f in dataclasses.fields(config_cls)}
    return create_model(
        f"{config_cls.__name__}Body",
        __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
        __validators__={"known_only": model_validator(mode="before")(known_only)},
        background=(bool, Field(False, description="Answer 202 at once; follow the job with GET status.")),
        **fields,
    )


MapBody = _config_body(ParametricUMAPConfig)
Vec2TextBody = _config_body(Vec2TextConfig)


def config_from(config_cls: type[T], body: BaseModel | None) -> T:
    """The config a body asks for (unset fields keep their defaults)."""
    return config_cls.from_dict(body.model_dump(exclude_none=True, exclude={"background"}) if body else {})


def _loop_setting(name: str, text: str) -> Any:
    """An optional loop setting of a fill, within the bounds every front-end accepts."""
    least, most = SETTING_BOUNDS[name]
    return Field(None, ge=least, le=most, description=text)


class FillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # Map coordinates lie within a few tens of the origin; the engine refuses points far
    # outside the map, these bounds keep absurd magnitudes from reaching it at all.
    x: float = Field(ge=-1e6, le=1e6, description="The point's map coordinates.")
    y: float = Field(ge=-1e6, le=1e6)
    num_steps: int | None = _loop_setting("num_steps", "Correction steps (default: the model's).")
    sequence_beam_width: int | None = _loop_setting(
        "sequence_beam_width", "Hypotheses kept per step; each proposes this many texts, so a step writes its square.")
    target_aware: bool = Field(True, description="Prefer texts that land near the point.")
    seed_documents: int | None = _loop_setting(
        "seed_documents", "Nearest corpus documents given to the corrector to rewrite (default: the model's).")
    stream: bool = Field(False, description='Answer in NDJSON: a line {"step": ...} as each step is done, '
                                            'then {"result": ...}.')


class VersionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(None, description="e.g. 'v0002' (default: the current version); becomes current.")


def plain(obj: Any) -> Any:
    """JSON-ready: dataclasses, numpy values and paths become plain values, NaN and ±inf null."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return str(obj) if isinstance(obj, Path) else obj
