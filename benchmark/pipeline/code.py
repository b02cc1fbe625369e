"""Code identity of a trial: the source files its result depends on, and their fingerprint.

A trial runs three pieces of code: its experiment (``benchmark/experiments/<experiment>.py``), its
method's module and its dataset's module, each with the repository modules it imports, followed
transitively (:func:`closure`). That set of files is the trial's *code*; its fingerprint
(:func:`fingerprint`) hashes each file's syntax tree with docstrings removed, so an edit of a
comment or a docstring changes no trial, while any edit of the code that runs changes exactly the
trials that run it. A method or dataset from a plugin (another distribution) adds its module
file and the distribution's name and version.

The same function gives DVC its dependencies: ``python -m benchmark prepare`` writes the files and
their hashes of every trial of a sweep into ``data/prepared/<sweep>/code.json``, the sweep stage's
dependency, so ``dvc repro`` reruns a sweep exactly when the code of one of its trials changed, and
the sweep then retrains exactly those trials.

Import resolution is static (:mod:`ast`): ``import a.b``, ``from a import b`` (a submodule or a
name re-exported by ``a/__init__.py``, followed to the module defining it) and ``pkg.name``
attribute uses of an imported package. Package ``__init__`` files themselves are not part of a
closure: they only re-export and register (keep them that way).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from benchmark import paths
from benchmark.experiments.config import RunConfig

LOCAL_PACKAGES = ("benchmark", "methods", "datasets", "registry")  # top-level names inside the repository


@dataclass(frozen=True)
class CodeUnit:
    """One file of a trial's code: its repository-relative path (or absolute, outside) and hash."""

    path: str
    digest: str


def _module_file(module: str) -> Path | None:
    """The source file of a repository module (``methods._core`` -> methods/_core.py), else None."""
    if module.split(".")[0] not in LOCAL_PACKAGES:
        return None
    base = paths.REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(file: Path) -> str:
    parts = list(file.resolve().relative_to(paths.REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.lru_cache(maxsize=None)
def _tree(file: Path) -> ast.Module:
    return ast.parse(file.read_text(), filename=str(file))


def _absolute(file: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved against ``file``)."""
    if not node.level:
        return node.module or ""
    package = _module_name(file).split(".")
    if file.name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - node.level + 1]
    return ".".join(package + ([node.module] if node.module else []))


@functools.lru_cache(maxsize=None)
def _defining_module(package: str, name: str) -> str | None:
    """Where ``from package import name`` really comes from: a submodule, or the module that
    ``package/__init__.py`` re-exports ``name`` from (followed until a non-package module)."""
    if _module_file(f"{package}.{name}") is not None:
        return f"{package}.{name}"
    init = _module_file(package)
    if init is None or init.name != "__init__.py":
        return package if init is not None else None
    for node in ast.walk(_tree(init)):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = _absolute(init, node)
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            return _defining_module(source, original) or source
    return None


@functools.lru_cache(maxsize=None)
def direct_imports(file: Path) -> frozenset[Path]:
    """Repository source files that ``file`` imports (anywhere in it, functions included)."""
    modules: set[str] = set()
    packages: dict[str, str] = {}  # local alias -> imported package
    tree = _tree(file)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules.add(alias.name)
                packages[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                    alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(file, node)
            for alias in node.names:
                modules.add(_defining_module(source, alias.name) or source)
    for node in ast.walk(tree):  # `import methods; methods.build(...)`: follow the re-export
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in packages:
            defining = _defining_module(packages[node.value.id], node.attr)
            if defining:
                modules.add(defining)
    files = {_module_file(module) for module in modules}
    return frozenset(f for f in files if f is not None and f.name != "__init__.py" and f != file)


def closure(roots: Iterable[Path]) -> tuple[Path, ...]:
    """Every repository source file reachable from ``roots`` by imports, roots included (sorted)."""
    seen: set[Path] = set()
    todo = [Path(root).resolve() for root in roots]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        if _is_local(file):
            todo.extend(direct_imports(file) - seen)
    return tuple(sorted(seen))


def _is_local(file: Path) -> bool:
    return paths.REPO_ROOT in file.parents


@functools.lru_cache(maxsize=None)
def file_digest(file: Path) -> str:
    """sha256 of the file's syntax tree without docstrings (comments and docstrings do not count)."""
    tree = ast.parse(file.read_text(), filename=str(file))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def _display(file: Path) -> str:
    return file.relative_to(paths.REPO_ROOT).as_posix() if _is_local(file) else str(file)


def _registry_unit(kind: str, name: str) -> tuple[Path, str | None]:
    """Module file of a registered method / dataset and, for a plugin, its distribution."""
    if kind == "method":
        import methods as registry
    else:
        import datasets as registry
    spec = registry.get(name)
    module = spec.cls.__module__
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:
        raise ValueError(f"{kind}: cannot locate the source of {name!r} (module {module})")
    distribution = getattr(spec, "distribution", None)
    return Path(found.origin).resolve(), distribution


@functools.lru_cache(maxsize=None)
def trial_code(experiment: str, method: str, dataset: str) -> tuple[tuple[CodeUnit, ...], tuple[str, ...]]:
    """The files a trial of (experiment, method, dataset) runs, hashed, and its plugin distributions."""
    from benchmark.experiments.train import experiment_module

    roots = [_module_file(experiment_module(experiment))]
    distributions = []
    for kind, name in (("method", method), ("dataset", dataset)):
        file, distribution = _registry_unit(kind, name)
        roots.append(file)
        if distribution:
            distributions.append(distribution)
    units = tuple(CodeUnit(_display(f), file_digest(f)) for f in closure(roots))
    return units, tuple(sorted(distributions))


def config_code(config: RunConfig) -> tuple[tuple[CodeUnit, ...], tuple[str, ...]]:
    return trial_code(config.experiment, config.method, config.dataset)


def fingerprint(config: RunConfig) -> str:
    """sha256 over the code of ``config``'s trial (paths, syntax-tree hashes, plugin versions)."""
    units, distributions = config_code(config)
    payload = json.dumps({"files": [[u.path, u.digest] for u in units], "plugins": distributions})
    return hashlib.sha256(payload.encode()).hexdigest()


def trial_id_of(config: RunConfig) -> str:
    """Deterministic id of a trial: a hash of its full configuration and of its code
    (12 hex characters). Resuming skips a trial only if both are unchanged."""
    canonical = json.dumps({"config": config.to_dict(), "code": fingerprint(config)}, sort_keys=True, default=repr)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def sweep_code(configs: Iterable[RunConfig]) -> dict[str, object]:
    """What ``code.json`` records for a sweep: every file its trials run, with its hash, and the plugins."""
    files: dict[str, str] = {}
    plugins: set[str] = set()
    for config in configs:
        units, distributions = config_code(config)
        files.update((u.path, u.digest) for u in units)
        plugins.update(distributions)
    return {"files": dict(sorted(files.items())), "plugins": sorted(plugins)}


def plugin_code() -> dict[str, object]:
    """Every installed plugin's code, for DVC: per entry point of the ``vqbench.methods`` and
    ``vqbench.datasets`` groups, its value, distribution (``name==version``) and the syntax-tree
    hash of each ``.py`` file of its top-level package (or module), wherever it is installed
    (outside the repository too, editable installs included). Nothing is imported from the plugins:
    their files are located by ``importlib.util.find_spec`` of the top-level name."""
    import importlib.metadata

    from datasets._registry import ENTRY_POINT_GROUP as DATASETS_GROUP
    from methods._registry import ENTRY_POINT_GROUP as METHODS_GROUP

    out: dict[str, object] = {}
    for group in (METHODS_GROUP, DATASETS_GROUP):
        entries: dict[str, object] = {}
        for entry_point in sorted(importlib.metadata.entry_points(group=group), key=lambda ep: (ep.name, ep.value)):
            dist = entry_point.dist
            top = entry_point.value.split(":")[0].split(".")[0]
            try:
                found = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                found = None
            files: list[Path] = []
            if found is not None and found.submodule_search_locations:
                files = sorted(f for folder in found.submodule_search_locations for f in Path(folder).rglob("*.py"))
            elif found is not None and found.origin and found.origin.endswith(".py"):
                files = [Path(found.origin)]
            digests = {}
            for file in files:
                try:
                    digests[str(file.resolve())] = file_digest(file.resolve())
                except (OSError, SyntaxError, ValueError) as err:  # the registry reports a broken plugin
                    digests[str(file.resolve())] = f"unreadable: {type(err).__name__}"
            entries[entry_point.name] = {
                "value": entry_point.value,
                "distribution": f"{dist.metadata['Name']}=={dist.version}" if dist is not None else None,
                "files": digests,
            }
        out[group] = entries
    return out
