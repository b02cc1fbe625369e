"""The one registry API of vqbench: a name -> frozen spec table per kind, filled by decorators and
by entry points, and the one options validator.

``methods`` and ``datasets`` each hold one :class:`Registry` instance (mmengine's design: one class,
one instance per kind) and expose the same functions: ``available()``, ``get(name)``,
``register(name)``, ``unregister(name)``, ``make_options(name, **options)``,
``reload_entry_points()`` and ``plugin_errors()``; ``methods.build`` and ``datasets.load``
construct an object from a spec.

Rules, the same for both kinds:

- A name is registered once. Registering a second class under a taken name raises ValueError
  naming both owners (mmengine's ``_register_module``; not timm's warn-and-overwrite).
- An unknown name raises ``ValueError("<kind>: unknown <kind> 'x'. Did you mean 'y'? Valid
  <kind>s: [...]")``; an unknown option ``ValueError("<key>: unknown option ... Did you mean
  'y'? Valid options: [...]")`` (:func:`make_options`). The options dataclass validates and
  coerces the values itself, in ``__post_init__``.
- Plugins join through the entry-point group ``vqbench.<kind>s``. An entry point names either a
  class (registered under the entry point's name) or a module whose import registers classes.
  The group is scanned once, on the first ``available()`` / ``get()``; every call afterwards sees
  the same table. A plugin that fails (its import raises, it registers nothing, it is neither a
  class nor a module, its class is rejected, its name is taken) is skipped *alone* with a
  :class:`PluginWarning` naming the entry point, its value and its distribution; ``get`` of its
  name then raises :class:`PluginError` with the same text. A plugin cannot shadow a name
  registered outside the entry points (the built-ins); two plugins claiming one name are both
  skipped, because picking one would make results depend on the order of ``sys.path``.
- Each spec records where its class comes from: ``module`` (the module name; ``module_file``
  its file) and ``distribution`` (``"name==version"`` of the installed distribution for plugins,
  None for classes registered in-process), which a run fingerprint can pin.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import sys
import types
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Generic, Iterator, Mapping, TypeVar

__all__ = ["PluginError", "PluginWarning", "Registry", "Spec", "close_match_hint", "make_options"]


class PluginError(ValueError):
    """A plugin's entry point could not be registered; the message says which and why."""


class PluginWarning(UserWarning):
    """Emitted once per scan for each plugin that was skipped (same text as its PluginError)."""


@dataclass(frozen=True, kw_only=True)
class Spec:
    """What every registry entry has: name, class, options dataclass type and provenance."""

    KIND: ClassVar[str] = "entry"  # the registry's kind, for messages ("method", "dataset")

    name: str
    cls: type
    options: type
    module: str = ""
    distribution: str | None = None

    def option_names(self) -> list[str]:
        """The option fields, in declaration order."""
        return [field.name for field in dataclasses.fields(self.options)]

    @property
    def defaults(self) -> dict[str, Any]:
        """Each option's declared default (options without a default are left out)."""
        defaults = {}
        for field in dataclasses.fields(self.options):
            if field.default is not dataclasses.MISSING:
                defaults[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                defaults[field.name] = field.default_factory()
        return defaults

    @property
    def module_file(self) -> str | None:
        """The file of :attr:`module` (None when the module has no file or is not imported)."""
        module = sys.modules.get(self.module)
        return getattr(module, "__file__", None)

    def describe(self) -> str:
        """The owner of this name, for error messages: class, module and distribution."""
        where = f"distribution {self.distribution}" if self.distribution else "built in / in-process"
        return f"{self.cls.__qualname__} from module {self.module!r} ({where})"


S = TypeVar("S", bound=Spec)


def close_match_hint(key: str, valid: list[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``valid`` (difflib), or an empty string."""
    match = difflib.get_close_matches(str(key), valid, n=1)
    return f" Did you mean {match[0]!r}?" if match else ""


def make_options(spec_or_options_type: Spec | type, mapping: Mapping[str, Any] | None = None,
                 where: str = "") -> Any:
    """Validated instance of an options dataclass from ``mapping`` (one helper for every caller).

    ``spec_or_options_type`` is a registry :class:`Spec` or a dataclass type. An unknown key raises
    ValueError ``"<where>.<key>: unknown option for <owner>. Did you mean ...? Valid options:
    [...]"``; a missing required option raises ValueError naming it. Values are validated and
    coerced by the dataclass itself (``__post_init__``); its ValueError (which names the field,
    ``"beta: must be >= 0"``) is re-raised with ``where`` in front (``"<where>.beta: ..."``), so a
    config loader passes the dotted key of the mapping as ``where``.
    """
    if isinstance(spec_or_options_type, Spec):
        options_type = spec_or_options_type.options
        owner = f"{spec_or_options_type.KIND} {spec_or_options_type.name!r}"
    elif isinstance(spec_or_options_type, type) and dataclasses.is_dataclass(spec_or_options_type):
        options_type = spec_or_options_type
        owner = options_type.__qualname__
    else:
        raise TypeError(f"make_options needs a registry Spec or a dataclass type, got {spec_or_options_type!r}")
    if mapping is not None and not isinstance(mapping, Mapping):
        raise ValueError(f"{where or 'options'}: must be a mapping of option names to values, got {mapping!r}")
    mapping = dict(mapping or {})
    prefix = f"{where}." if where else ""
    fields = dataclasses.fields(options_type)
    valid = [field.name for field in fields if field.init]
    for key in mapping:
        if key not in valid:
            raise ValueError(
                f"{prefix}{key}: unknown option for {owner}.{close_match_hint(str(key), valid)} "
                f"Valid options: {valid}"
            )
    for field in fields:
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if field.init and required and field.name not in mapping:
            raise ValueError(f"{prefix}{field.name}: required option of {owner} is missing")
    try:
        return options_type(**mapping)
    except ValueError as err:
        if not where:
            raise
        raise ValueError(_prefixed(where, str(err), valid)) from err


def _prefixed(where: str, message: str, fields: list[str]) -> str:
    """``where.field: ...`` when the message names a field first, else ``where: ...``."""
    head = message.split(":", 1)[0]
    return f"{where}.{message}" if head in fields else f"{where}: {message}"


@dataclass(frozen=True)
class _EntryPoint:
    """One entry point of the group, with the text that names it in every message."""

    name: str
    value: str
    distribution: str | None
    load: Callable[[], Any]

    @classmethod
    def of(cls, entry_point: importlib.metadata.EntryPoint) -> "_EntryPoint":
        dist = getattr(entry_point, "dist", None)
        distribution = None
        if dist is not None:
            distribution = f"{dist.metadata['Name']}=={dist.version}"
        return cls(entry_point.name, entry_point.value, distribution, entry_point.load)

    def describe(self, group: str) -> str:
        where = f"distribution {self.distribution}" if self.distribution else "unknown distribution"
        return f"entry point {self.name!r} = {self.value!r} of group {group!r} ({where})"


class Registry(Generic[S]):
    """One kind's table: name -> frozen spec, filled by :meth:`register` and by entry points.

    ``kind`` ("method", "dataset") names the kind in messages; the entry-point group is
    ``vqbench.<kind>s``. A registered class must subclass ``base`` (when given) and declare
    ``Options``, a frozen dataclass; ``make_spec(name, cls, module=..., distribution=...)`` builds
    the kind's frozen spec and raises TypeError for anything else the kind requires.
    """

    def __init__(self, kind: str, make_spec: Callable[..., S], *, base: type | None = None,
                 group: str | None = None) -> None:
        self.kind = kind
        self._base = base
        self.group = group or f"vqbench.{kind}s"
        self._make_spec = make_spec
        self._specs: dict[str, S] = {}
        self._owners: dict[str, _EntryPoint] = {}  # plugin name -> the entry point that registered it
        self._errors: dict[str, PluginError] = {}  # name of a skipped plugin -> why
        self._problems: list[PluginError] = []  # every plugin skipped by the last scan, in order
        self._claims: dict[str, list[tuple[_EntryPoint, S]]] = {}  # plugin names claimed twice
        self._loaded: dict[tuple[str, str, str | None], list[S]] = {}  # entry point -> its specs
        self._added: list[S] = []  # what the entry point being loaded has registered so far
        self._loading: _EntryPoint | None = None
        self._scanned = False

    # ---------------------------------------------------------------- registration

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator adding ``cls`` under ``name``; a taken name raises ValueError naming both."""
        if not isinstance(name, str) or not name.isidentifier() or not name.islower():
            raise ValueError(f"name: a {self.kind} name must be a lower-case identifier, got {name!r}")

        def decorate(cls: type) -> type:
            self._add(name, cls)
            return cls

        return decorate

    def _add(self, name: str, cls: type) -> S:
        base = self._base
        if not (isinstance(cls, type) and (base is None or issubclass(cls, base))):
            what = f"a {base.__name__} subclass" if base is not None else "a class"
            raise TypeError(f"@register({name!r}) must decorate {what}, got {cls!r}")
        options = getattr(cls, "Options", None)
        if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
            raise TypeError(f"{cls.__qualname__}.Options must be a frozen dataclass type")
        if not options.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise TypeError(f"{cls.__qualname__}.Options must be a frozen dataclass")
        loading = self._loading
        spec = self._make_spec(
            name, cls, module=cls.__module__, distribution=loading.distribution if loading else None
        )
        existing = self._specs.get(name)
        if existing is not None and existing.cls is not cls:
            if loading is not None and name in self._owners:
                # two plugins, one name: recorded here, the scan then drops the name for both
                self._claims.setdefault(name, [(self._owners[name], existing)]).append((loading, spec))
                self._added.append(spec)
                return spec
            raise ValueError(
                f"{self.kind} {name!r} is already registered by {existing.describe()}; "
                f"cannot register {spec.describe()} under the same name"
            )
        self._errors.pop(name, None)  # a name registered in-process after its plugin failed
        self._specs[name] = spec
        if loading is not None:
            self._owners[name] = loading
            self._added.append(spec)
        return spec

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register throwaway classes clean up with this)."""
        self._specs.pop(name, None)
        self._owners.pop(name, None)

    # ---------------------------------------------------------------- entry points

    def _scan(self) -> None:
        if self._scanned or self._loading is not None:
            return  # a plugin importing the package while it loads sees the table so far
        self._problems, self._errors, self._claims = [], {}, {}
        for entry_point in importlib.metadata.entry_points(group=self.group):
            ep = _EntryPoint.of(entry_point)
            try:
                self._load_one(ep)
            except PluginError as err:
                self._skip(ep.name, err)
        for name, claims in self._claims.items():
            self.unregister(name)
            owners = "; ".join(f"{ep.describe(self.group)} with {spec.describe()}" for ep, spec in claims)
            self._skip(name, PluginError(
                f"{self.kind}: {len(claims)} plugins register the name {name!r}, all of them were "
                f"skipped: {owners}"
            ))
        self._scanned = True

    def _load_one(self, ep: _EntryPoint) -> None:
        """Register what one entry point provides; PluginError (and nothing registered) if it fails."""
        key = (ep.name, ep.value, ep.distribution)
        before = (dict(self._specs), dict(self._owners), {n: list(c) for n, c in self._claims.items()})
        self._loading, self._added = ep, []
        try:
            if key in self._loaded:  # loaded by an earlier scan: its module would not run again
                for spec in self._loaded[key]:
                    self._add(spec.name, spec.cls)
            else:
                loaded = ep.load()
                if isinstance(loaded, type):
                    if ep.name not in self._specs or self._specs[ep.name].cls is not loaded:
                        self._add(ep.name, loaded)  # unless its module registered it under this name
                elif not isinstance(loaded, types.ModuleType):
                    raise TypeError(
                        f"it loads {loaded!r}, neither a {self.kind} class nor a module that registers one"
                    )
                if not self._added:
                    raise TypeError(f"module {loaded.__name__!r} registers no {self.kind}")
        except Exception as err:  # noqa: BLE001 - whatever third-party code raises skips that plugin alone
            self._specs, self._owners, self._claims = before
            reason = str(err) if type(err) in (TypeError, ValueError) else f"{type(err).__name__}: {err}"
            raise PluginError(f"{self.kind}: plugin {ep.describe(self.group)} was skipped: {reason}") from err
        finally:
            self._loading = None
        self._loaded[key] = list(self._added)

    def _skip(self, name: str, err: PluginError) -> None:
        self._problems.append(err)
        if name not in self._specs:
            self._errors[name] = err
        warnings.warn(PluginWarning(str(err)), stacklevel=5)

    def reload_entry_points(self) -> None:
        """Scan the entry-point group again (after installing or removing a plugin at run time)."""
        for name in list(self._owners):
            self.unregister(name)
        self._scanned = False
        self._scan()

    def plugin_errors(self) -> list[PluginError]:
        """The plugins skipped by the last scan, in scan order (empty when every plugin loaded)."""
        self._scan()
        return list(self._problems)

    # ---------------------------------------------------------------- lookup

    def available(self) -> list[str]:
        """Sorted names of every registered entry (in-process and plugins)."""
        self._scan()
        return sorted(self._specs)

    def registration_order(self) -> list[str]:
        """Every registered name in the order of registration (built-ins by import order, then plugins)."""
        self._scan()
        return list(self._specs)

    def get(self, name: str) -> S:
        """The spec of ``name``; unknown -> ValueError listing the valid names and a close match."""
        self._scan()
        if isinstance(name, str) and name in self._specs:
            return self._specs[name]
        if isinstance(name, str) and name in self._errors:
            raise self._errors[name]
        valid = sorted(self._specs)
        raise ValueError(
            f"{self.kind}: unknown {self.kind} {name!r}.{close_match_hint(str(name), valid)} "
            f"Valid {self.kind}s: {valid}"
        )

    def make_options(self, name: str, **options: Any) -> Any:
        """Validated options dataclass of ``name`` (see :func:`make_options`)."""
        return make_options(self.get(name), options)

    def __contains__(self, name: object) -> bool:
        self._scan()
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self.available())

    def __len__(self) -> int:
        return len(self.available())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, group={self.group!r}, names={sorted(self._specs)})"
