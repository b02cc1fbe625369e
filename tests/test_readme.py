"""The README says what is true: its method list is the registry's, its layout table is the tree's."""
from __future__ import annotations

import ast
import re
import subprocess

import pytest

import methods
from benchmark import paths

README = (paths.REPO_ROOT / "README.md").read_text()


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=paths.REPO_ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def _layout_rows() -> dict[str, str]:
    """``where`` cell -> the whole row, for the rows of the README's layout table."""
    section = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows[cells[0]] = line
    return rows


def test_the_method_list_is_the_registry():
    block = re.search(r"methods\.available\(\)\s+#\s*(\[.*?\])", README, re.S)
    assert block is not None, "the README's methods.available() example"
    listed = ast.literal_eval(re.sub(r"\s*#\s*", " ", block.group(1)))
    assert listed == methods.available()


def test_every_path_in_the_layout_exists():
    for where in _layout_rows():
        for path in re.findall(r"`([^`]+)`", where):
            assert (paths.REPO_ROOT / path).exists(), path


@pytest.mark.parametrize("folder", ["benchmark/experiments/", "benchmark/pipeline/", "benchmark/report/",
                                    "benchmark/perf/", "reports/", "docs/"])
def test_the_layout_names_every_file_of_a_folder(folder):
    row = _layout_rows()[f"`{folder}`"]
    files = {f[len(folder):].split("/")[0] for f in _tracked() if f.startswith(folder)}
    files = {f for f in files if f != "__init__.py"}
    missing = sorted(f for f in files if f"`{f}" not in row)
    assert missing == [], f"{folder}: the README's layout table does not name {missing}"


def test_the_layout_names_every_top_level_folder():
    folders = {f.split("/")[0] for f in _tracked() if "/" in f and not f.startswith(".")}
    rows = " ".join(_layout_rows())
    assert sorted(f for f in folders if f"`{f}/" not in rows) == []
