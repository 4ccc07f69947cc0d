"""The examples in the apps' docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["mm.apps.common", "mm.apps.search", "mm.apps.vqa", "mm.apps.speech",
                                  "mm.apps.combined"])
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
