"""Conformance suite: what every registered quantizer must do.

Parametrized over ``methods.available()``, so a newly registered method is checked automatically.
The checks live in ``methods.testing`` (plain functions of a method name), so a plugin author runs
the same suite on one quantizer with ``methods.testing.run_conformance``. Branches read the
registry's flags, never method names.
"""
from __future__ import annotations

import pytest

import methods
from methods.testing import CHECKS, run_conformance  # noqa: F401  (run_conformance: the old import path)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", methods.available())
def test_conformance(name: str, check) -> None:
    check(name)
