"""The methods registry: one frozen :class:`MethodSpec` per quantizer name, filled by ``@register``.

The table is a :class:`registry.Registry` (the API shared with ``datasets``: ``available``,
``get``, ``register``, ``unregister``, ``make_options``, ``reload_entry_points``,
``plugin_errors``). Out-of-tree quantizers join through the entry-point group ``vqbench.methods``:
an entry point names either a Quantizer subclass, registered under the entry point's name, or a
module that registers its classes on import. A plugin that fails to load is skipped alone with a
``PluginWarning``; ``get`` of its name raises ``PluginError`` saying why.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable

import torch

from methods._base import Quantizer, Tunable
from registry import PluginError, PluginWarning, Registry, Spec

ENTRY_POINT_GROUP = "vqbench.methods"

__all__ = [
    "ENTRY_POINT_GROUP", "METHODS", "MethodSpec", "display_order", "PluginError", "PluginWarning", "available", "build",
    "get", "make_options", "plugin_errors", "register", "reload_entry_points", "unregister",
]


@dataclass(frozen=True, kw_only=True)
class MethodSpec(Spec):
    """A registered quantizer: name, class, options type, paper, capability flags and provenance
    (``module``, ``distribution``; see :class:`registry.Spec`)."""

    KIND = "method"

    paper: str
    trainable_by_gradient: bool
    distribution_matching: bool
    nonparametric_matching: bool = False
    straight_through: bool = True
    learnable_codebook: bool = True
    relaxed_gradient: bool = False
    code_structure: str = "single"
    error_space: str = "euclidean"
    codebook_size_rule: str = "any"
    gradient_gain: str = "one"
    degenerate_sizes: bool = True
    has_loss_terms: bool = True
    rank_synchronised: bool = False
    ddp_equivalent: bool = True
    tunables: Mapping[str, Tunable] = field(default_factory=lambda: MappingProxyType({}))


# Class attributes of a Quantizer that its spec carries (read by the tests, sweeps and report).
CLASS_FLAGS = ("paper", "trainable_by_gradient", "distribution_matching", "nonparametric_matching", "straight_through",
               "learnable_codebook", "relaxed_gradient", "code_structure", "error_space", "codebook_size_rule", "gradient_gain",
               "degenerate_sizes", "has_loss_terms", "rank_synchronised", "ddp_equivalent")


def _method_spec(name: str, cls: type[Quantizer], **provenance: Any) -> MethodSpec:
    if cls.nonparametric_matching and not cls.distribution_matching:
        raise ValueError(f"nonparametric_matching: {cls.__name__} sets it without distribution_matching")
    option_names = {f.name for f in dataclasses.fields(cls.Options)}
    for option, tunable in cls.tunables.items():
        if option not in option_names:
            raise ValueError(f"tunables: {cls.__name__}.tunables names {option!r}, not an option of "
                             f"{cls.Options.__name__} ({sorted(option_names)})")
        if not isinstance(tunable, Tunable):
            raise TypeError(f"tunables: {cls.__name__}.tunables[{option!r}] must be a Tunable, got {tunable!r}")
    return MethodSpec(name=name, cls=cls, options=cls.Options, tunables=MappingProxyType(dict(cls.tunables)),
                      **{flag: getattr(cls, flag) for flag in CLASS_FLAGS}, **provenance)


METHODS: Registry[MethodSpec] = Registry("method", _method_spec, base=Quantizer, group=ENTRY_POINT_GROUP)


def register(name: str) -> Callable[[type[Quantizer]], type[Quantizer]]:
    """Class decorator adding a Quantizer subclass to the registry under ``name``.

    The class must define ``Options`` (a frozen dataclass). A duplicate name is an error.
    """
    return METHODS.register(name)


def unregister(name: str) -> None:
    """Remove a method (tests that register throwaway quantizers clean up with this)."""
    METHODS.unregister(name)


def reload_entry_points() -> None:
    """Scan the ``vqbench.methods`` entry points again (after installing a plugin at run time)."""
    METHODS.reload_entry_points()


def plugin_errors() -> list[PluginError]:
    """The ``vqbench.methods`` plugins skipped by the last scan, each saying why."""
    return METHODS.plugin_errors()


def display_order() -> list[str]:
    """Method names in registration order (the order reports list them in)."""
    return METHODS.registration_order()


def available() -> list[str]:
    """Sorted names of every registered quantizer (built-in and entry-point plugins)."""
    return METHODS.available()


def get(name: str) -> MethodSpec:
    """The spec of ``name``; an unknown name raises ValueError listing the valid ones."""
    return METHODS.get(name)


def make_options(name: str, **options: Any) -> Any:
    """Validated options dataclass of ``name``; unknown keys raise ValueError listing valid ones."""
    return METHODS.make_options(name, **options)


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
