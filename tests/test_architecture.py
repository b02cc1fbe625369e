"""benchmark/ is layered: experiments -> pipeline -> report (and perf), no import cycles, no import
from a later layer; the product speaks of itself (no issue numbers, no paths outside the repository)."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import networkx as nx
import pytest
from benchmark.paths import REPO_ROOT

# A package may import from its own layer and earlier ones only (paths, the metric registry and the
# process runtime settings are below every layer).
LAYERS = {"benchmark.paths": 0, "benchmark.metric_registry": 0, "benchmark.runtime": 0, "benchmark.experiments": 1,
          "benchmark.pipeline": 2, "benchmark.report": 3,
          "benchmark.perf": 3}


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``benchmark.*`` module ``path`` imports, anywhere in the file (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("benchmark")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("benchmark"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def import_graph() -> nx.DiGraph:
    files = {_module(p): p for p in (REPO_ROOT / "benchmark").rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in files.items():
        if name == "benchmark.__main__":  # the CLI dispatches to every layer by name
            continue
        graph.add_node(name)
        for target in _imports(path):
            if target in files and target != name:
                graph.add_edge(name, target)
    return graph


def _layer(module: str) -> int | None:
    return next((layer for prefix, layer in LAYERS.items() if module == prefix or module.startswith(prefix + ".")), None)


def test_benchmark_has_no_import_cycle():
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], f"import cycles: {cycles}"


def test_no_layer_imports_a_later_layer():
    bad = []
    for source, target in import_graph().edges:
        a, b = _layer(source), _layer(target)
        if a is not None and b is not None and b > a:
            bad.append(f"{source} -> {target}")
        if source.startswith("benchmark.report") and target.startswith("benchmark.perf") or \
                source.startswith("benchmark.perf") and target.startswith("benchmark.report"):
            bad.append(f"{source} -> {target}")
    assert bad == []


def test_every_module_of_benchmark_is_in_a_layer():
    assert [m for m in import_graph().nodes if m not in ("benchmark",) and _layer(m) is None] == []


PRODUCT_SPEAKS_OF_ITSELF = [
    r"\bissues?[ _-]*#?[0-9]+",  # "issue 8", "Issue-8", "issues #12", "issue_8"
    r"\.\./shared", r"REFERENCE\.md",
    r"\bseed[ -](paper|summary|summaries)\b", r"\bthe seed('s| states)",  # name the paper
]


@pytest.mark.parametrize("pattern", PRODUCT_SPEAKS_OF_ITSELF)
def test_the_product_speaks_of_itself(pattern):
    """No issue numbers, references to files outside the repository or a paper called "the seed" in
    code, docs or reports."""
    result = subprocess.run(["git", "grep", "-n", "-I", "-i", "-E", pattern, "--", ".", ":!tests"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.stdout == "", result.stdout


@pytest.mark.parametrize("text", ["see issue 8", "Issue-8 ablation", "issues #12", "the seed paper",
                                  "as the seed summary states it", "Theorem 2 as the seed states it"])
def test_the_patterns_catch_what_they_mean(text):
    import re

    assert any(re.search(p, text, re.I) for p in PRODUCT_SPEAKS_OF_ITSELF)


@pytest.mark.parametrize("text", ["seed 0", "the seeds", "tissue 3", "seed: [0, 1, 2]"])
def test_the_patterns_leave_ordinary_words(text):
    import re

    assert not any(re.search(p, text, re.I) for p in PRODUCT_SPEAKS_OF_ITSELF)
