"""What the configs share: fields with a help sentence, and dict round trips that name the
valid settings when given an unknown one (the CLI, the API and the app all build configs from
user input)."""
from __future__ import annotations

from dataclasses import asdict, field, fields
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="ConfigMixin")


def setting(text: str, default: object) -> Any:
    """A config field with one sentence of help, shown by the CLI and the app."""
    return field(default=default, metadata={"help": text})


class ConfigMixin:
    """`to_dict` / `from_dict` for frozen dataclass configs; tuples become lists in JSON."""

    what: ClassVar[str] = "settings"

    def to_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, object]) -> C:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.what} {unknown}; valid ones are {sorted(known)}")
        return cls(**d)
