"""The params.yaml reference, generated from the dataclasses that parse it (``docs/params.md``).

Each section of params.yaml is one frozen dataclass; its fields are the keys, with their types,
defaults and the comment written beside each field. ``python -m benchmark.pipeline.reference``
prints the reference; ``tests/test_params_reference.py`` keeps ``docs/params.md`` equal to it.
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
import typing
from pathlib import Path
from typing import Any

from benchmark.experiments.config import RunConfig
from benchmark.pipeline import spec


EXAMPLE = """\
base:
  experiment: fit
  dataset: gaussian
  steps: 500
sweeps:
  NAME:
    title: An example sweep
    base:
      codebook_size: 1024
      dataset_options: {mean: 4.0}
    grid:
      method: [vanilla, wasserstein]
      seed: [0, 1]
      method_options.beta: [0.1, 0.25]
    method_options:
      wasserstein: {gamma: 10.0}
    cases:
      - when: {method: wasserstein}
        set: {codebook_lr: 3.0}
      - when: {dataset: uniform}
        set: {method_options.init: uniform}
    tune: {budget: 8, metric: error_vs_kmeans, lr: [1.0e-3, 3.0], optimizers: [sgd, adam]}
"""  # a test parses it against the live registries


def field_comments(cls: type) -> dict[str, str]:
    """The comment written on each field's line of ``cls`` (``name: type = default  # comment``)."""
    source = inspect.getsource(cls)
    comments: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    pending: list[str] = []  # full-line comments just above a field
    line_name: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and token.start[1] == 4 and token.string in names:
            line_name[token.start[0]] = token.string
            if pending:
                comments[token.string] = " ".join(pending)
                pending = []
        elif token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if token.start[0] in line_name:
                name = line_name[token.start[0]]
                comments[name] = f"{comments[name]} {text}".strip() if name in comments else text
            elif token.start[1] == 4:
                pending.append(text)
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT,
                                tokenize.DEDENT) and token.start[1] == 4:
            pending = []
    return comments


def _type_text(cls: type, name: str) -> str:
    hint = typing.get_type_hints(cls).get(name)
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    text = text or str(hint).replace("typing.", "").replace("collections.abc.", "")
    return text.replace(" | ", " or ")


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, tuple):
        return str(list(value))
    return str(value) if isinstance(value, (dict, list, Path, int, float)) else repr(value)


def section(title: str, cls: type, intro: str) -> list[str]:
    comments = field_comments(cls)
    lines = [f"## `{title}`", "", intro, "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        lines.append(f"| `{f.name}` | {_type_text(cls, f.name)} | `{_default_text(f)}` | "
                     f"{comments.get(f.name, '').replace('|', '/')} |")
    return lines + [""]


def params_reference() -> str:
    """The reference of every params.yaml section, in file order."""
    lines = ["# params.yaml reference", "",
             "Generated from the dataclasses that parse each section (`python -m benchmark.pipeline.reference`; "
             "a test keeps this file equal to it). Unknown keys anywhere are errors naming the dotted key; "
             "relative paths are relative to the params file.", "", "```yaml", EXAMPLE.rstrip(), "```", ""]
    lines += section("tracking", spec.TrackingSettings, "Where runs and tables go.")
    lines += section("ray", spec.RaySettings, "How trials are fanned out.")
    lines += section("base", RunConfig,
                     "RunConfig fields shared by every sweep; a sweep's own `base:` overrides them, then "
                     "`method_options.<method>`, the matching `cases`, then the grid point.")
    lines += section("sweeps.NAME", spec.SweepSettings, "One sweep = one MLflow experiment named NAME.")
    lines += section("sweeps.NAME.tune", spec.TuneSettings,
                     "Optional tuning stage: an equal budget per (method, setting).")
    lines += section("questions", spec.QuestionSweeps,
                     "The sweeps each open question of the report reads (lists of sweep names of `sweeps:`).")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(params_reference(), end="")
