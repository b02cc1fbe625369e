"""The dataset registry: one name -> one frozen :class:`DatasetSpec`.

A dataset class registers itself with ``@register("name")``. It must declare three class
attributes: ``Options`` (a frozen dataclass whose ``__post_init__`` validates every field and
raises ValueError naming it), ``kind`` (``"features"`` or ``"images"``) and ``source`` (the paper
or URL the data comes from). It is built as ``cls(options)``.

The table is a :class:`registry.Registry`, the API shared with ``methods``: duplicate names fail
at import naming both owners; unknown names and options fail with a ValueError listing the valid
ones and the closest match; out-of-tree datasets join through the entry-point group
``vqbench.datasets`` (a class, registered under the entry point's name, or a module that registers
on import), and a plugin that fails is skipped alone with a ``PluginWarning``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from registry import PluginError, PluginWarning, Registry, Spec

KINDS = ("features", "images")
ENTRY_POINT_GROUP = "vqbench.datasets"

T = TypeVar("T", bound=type)

__all__ = [
    "DATASETS", "DatasetSpec", "ENTRY_POINT_GROUP", "KINDS", "PluginError", "PluginWarning", "available",
    "get", "load", "make_options", "plugin_errors", "register", "reload_entry_points", "unregister",
]


@dataclass(frozen=True, kw_only=True)
class DatasetSpec(Spec):
    """One registry entry. ``options`` is the options dataclass type; ``kind`` a :data:`KINDS` value."""

    KIND = "dataset"

    kind: str
    source: str

    def make_options(self, **options: Any) -> Any:
        """Validated options instance; an unknown key raises ValueError listing the valid ones."""
        return DATASETS.make_options(self.name, **options)


def _dataset_spec(name: str, cls: type, **provenance: Any) -> DatasetSpec:
    kind = getattr(cls, "kind", None)
    if kind not in KINDS:
        raise TypeError(f"{cls.__qualname__}.kind must be one of {list(KINDS)}, got {kind!r}")
    source = getattr(cls, "source", None)
    if not isinstance(source, str) or not source:
        raise TypeError(f"{cls.__qualname__}.source must be a non-empty string")
    return DatasetSpec(name=name, cls=cls, options=cls.Options, kind=kind, source=source, **provenance)


DATASETS: Registry[DatasetSpec] = Registry("dataset", _dataset_spec, group=ENTRY_POINT_GROUP)


def register(name: str) -> Callable[[T], T]:
    """Class decorator adding ``cls`` to :data:`DATASETS` under ``name``."""
    return DATASETS.register(name)


def unregister(name: str) -> None:
    """Remove a dataset (tests that register throwaway datasets clean up with this)."""
    DATASETS.unregister(name)


def reload_entry_points() -> None:
    """Scan the ``vqbench.datasets`` entry points again (after installing a plugin at run time)."""
    DATASETS.reload_entry_points()


def plugin_errors() -> list[PluginError]:
    """The ``vqbench.datasets`` plugins skipped by the last scan, each saying why."""
    return DATASETS.plugin_errors()


def available() -> list[str]:
    """Registered dataset names, sorted (built-in and entry-point plugins)."""
    return DATASETS.available()


def get(name: str) -> DatasetSpec:
    """The spec registered under ``name``; unknown -> ValueError listing the valid names."""
    return DATASETS.get(name)


def make_options(name: str, **options: Any) -> Any:
    """Validated options dataclass of ``name``; unknown keys raise ValueError listing valid ones."""
    return DATASETS.make_options(name, **options)


def load(name: str, **options: Any) -> Any:
    """Build dataset ``name`` with ``options`` (checked against its options dataclass)."""
    spec = get(name)
    return spec.cls(make_options(name, **options))
