"""The examples in the VQA modules' docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["mm.encoders.vision", "mm.encoders.vision_config", "mm.encoders.vision_geometry",
           "mm.encoders.vision_budget", "mm.media.image", "mm.testing.vl", "mm.pipelines.vqa"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
