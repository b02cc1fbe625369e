"""The methods registry: one frozen spec per quantizer name, filled by ``@register``.

Out-of-tree quantizers join through the entry-point group ``vqbench.methods``: an entry point
either names a module that registers its classes on import, or a Quantizer subclass, registered
under the entry point's name.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable

import torch

from methods._base import Quantizer, Tunable

ENTRY_POINT_GROUP = "vqbench.methods"


@dataclass(frozen=True)
class MethodSpec:
    """A registered quantizer: its name, class, options type, paper and capability flags."""

    name: str
    cls: type[Quantizer]
    options: type
    paper: str
    trainable_by_gradient: bool
    distribution_matching: bool
    straight_through: bool = True
    learnable_codebook: bool = True
    tunables: Mapping[str, Tunable] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)]

    @property
    def defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.options())


_REGISTRY: dict[str, MethodSpec] = {}
_entry_points_loaded = False


def register(name: str) -> Callable[[type[Quantizer]], type[Quantizer]]:
    """Class decorator adding a Quantizer subclass to the registry under ``name``.

    The class must define ``Options`` (a frozen dataclass). A duplicate name is an error.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name: a method name must be an identifier, got {name!r}")

    def decorate(cls: type[Quantizer]) -> type[Quantizer]:
        if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
            raise TypeError(f"@register({name!r}) must decorate a Quantizer subclass, got {cls!r}")
        if not dataclasses.is_dataclass(cls.Options) or not cls.Options.__dataclass_params__.frozen:
            raise TypeError(f"{cls.__name__}.Options must be a frozen dataclass")
        option_names = {f.name for f in dataclasses.fields(cls.Options)}
        for option, tunable in cls.tunables.items():
            if option not in option_names:
                raise ValueError(
                    f"tunables: {cls.__name__}.tunables names {option!r}, not an option of "
                    f"{cls.Options.__name__} ({sorted(option_names)})"
                )
            if not isinstance(tunable, Tunable):
                raise TypeError(f"tunables: {cls.__name__}.tunables[{option!r}] must be a Tunable, got {tunable!r}")
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"method {name!r} is already registered by {_REGISTRY[name].cls.__qualname__}")
        _REGISTRY[name] = MethodSpec(
            name=name,
            cls=cls,
            options=cls.Options,
            paper=cls.paper,
            trainable_by_gradient=cls.trainable_by_gradient,
            distribution_matching=cls.distribution_matching,
            straight_through=cls.straight_through,
            learnable_codebook=cls.learnable_codebook,
            tunables=MappingProxyType(dict(cls.tunables)),
        )
        return cls

    return decorate


def unregister(name: str) -> None:
    """Remove a method (tests that register throwaway quantizers clean up with this)."""
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry_point.load()
        if isinstance(loaded, type) and issubclass(loaded, Quantizer) and entry_point.name not in _REGISTRY:
            register(entry_point.name)(loaded)


def reload_entry_points() -> None:
    """Scan the ``vqbench.methods`` entry points again (after installing a plugin at run time)."""
    global _entry_points_loaded
    _entry_points_loaded = False
    _load_entry_points()


def available() -> list[str]:
    """Sorted names of every registered quantizer (built-in and entry-point plugins)."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get(name: str) -> MethodSpec:
    """The spec of ``name``; an unknown name raises ValueError listing the valid ones."""
    _load_entry_points()
    if name not in _REGISTRY:
        valid = sorted(_REGISTRY)
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"method: unknown method {name!r}.{hint} Valid methods: {valid}")
    return _REGISTRY[name]


def make_options(name: str, **options: Any) -> Any:
    """Validated options dataclass of ``name``; unknown keys raise ValueError listing valid ones."""
    spec = get(name)
    unknown = sorted(set(options) - set(spec.option_names))
    if unknown:
        raise ValueError(
            f"{unknown[0]}: unknown option for method {name!r}; valid options: {spec.option_names}"
        )
    return spec.options(**options)


def build(
    name: str,
    *,
    dim: int,
    codebook_size: int,
    generator: torch.Generator | None = None,
    **options: Any,
) -> Quantizer:
    """Build the quantizer ``name`` for d = ``dim`` and K = ``codebook_size``.

    ``options`` are the fields of the method's options dataclass (see ``get(name).defaults``).
    ``generator`` seeds the initialisation (the global RNG when None).
    """
    spec = get(name)
    return spec.cls(dim, codebook_size, make_options(name, **options), generator=generator)
