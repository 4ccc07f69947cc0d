"""mm: on-device multimodal pipelines on LiquidAI's LFM2 family.

>>> import mm
>>> sorted(t.name for t in mm.tasks())[:2]
['asr', 'chat']
"""

from __future__ import annotations

from mm import errors
from mm.base import Pipeline
from mm.errors import MMError
from mm.registry import pipeline, register_task, tasks

__version__ = "0.1.0"

__all__ = ["MMError", "Pipeline", "__version__", "errors", "pipeline", "register_task", "tasks"]
