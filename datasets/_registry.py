"""The dataset registry: one name -> one frozen :class:`DatasetSpec`.

A dataset class registers itself with ``@register("name")``. It must declare three class
attributes: ``Options`` (a frozen dataclass whose ``__post_init__`` validates every field and
raises ValueError naming it), ``kind`` (``"features"`` or ``"images"``) and ``source`` (the paper
or URL the data comes from). It is built as ``cls(options)``.

Duplicate names fail at import (like mmengine's registry, unlike timm's overwrite); unknown names
and options fail with a ValueError listing the valid ones and the closest match (difflib).
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

KINDS = ("features", "images")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry. ``options`` is the options dataclass type; ``kind`` a :data:`KINDS` value."""

    name: str
    cls: type
    options: type
    kind: str
    source: str

    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)]

    def make_options(self, **options: Any) -> Any:
        """Validated options instance; an unknown key raises ValueError listing the valid ones."""
        valid = self.option_names()
        for key in options:
            if key not in valid:
                raise ValueError(
                    f"{key}: unknown option for dataset {self.name!r}{_close(key, valid)}; "
                    f"valid options: {valid}"
                )
        return self.options(**options)


DATASETS: dict[str, DatasetSpec] = {}


def _close(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def register(name: str) -> Callable[[T], T]:
    """Class decorator adding ``cls`` to :data:`DATASETS` under ``name``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"dataset name must match {_NAME.pattern}, got {name!r}")

    def decorator(cls: T) -> T:
        if name in DATASETS:
            raise ValueError(
                f"dataset {name!r} is already registered by {DATASETS[name].cls.__qualname__}"
            )
        options = getattr(cls, "Options", None)
        if not (dataclasses.is_dataclass(options) and isinstance(options, type)):
            raise TypeError(f"{cls.__qualname__}.Options must be a dataclass type")
        if not options.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise TypeError(f"{cls.__qualname__}.Options must be a frozen dataclass")
        kind = getattr(cls, "kind", None)
        if kind not in KINDS:
            raise TypeError(f"{cls.__qualname__}.kind must be one of {list(KINDS)}, got {kind!r}")
        source = getattr(cls, "source", None)
        if not isinstance(source, str) or not source:
            raise TypeError(f"{cls.__qualname__}.source must be a non-empty string")
        DATASETS[name] = DatasetSpec(name=name, cls=cls, options=options, kind=kind, source=source)
        return cls

    return decorator


def available() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS)


def get(name: str) -> DatasetSpec:
    """The spec registered under ``name``; unknown -> ValueError listing the valid names."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        valid = available()
        raise ValueError(
            f"unknown dataset {name!r}{_close(str(name), valid)}; valid datasets: {valid}"
        ) from None


def load(name: str, **options: Any) -> Any:
    """Build dataset ``name`` with ``options`` (checked against its options dataclass)."""
    spec = get(name)
    return spec.cls(spec.make_options(**options))
