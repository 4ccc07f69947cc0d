"""All mm apps in one page, one tab each; every model is loaded once and shared by all users.

>>> app = build_combined_app()           # nothing configured: each tab says how to start it
>>> type(app).__name__
'Blocks'

Start it from the command line with ``mm serve --task all --vqa-model DIR --speech-model DIR --search-index DIR``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from mm.apps.common import AppLimits, ModelSlot, prepare
from mm.apps.search import render_search, search_slot
from mm.apps.speech import render_speech, speech_slot
from mm.apps.vqa import render_vqa, vqa_slot


def build_combined_app(vqa_model: Any = None, speech_model: Any = None, search_index: Any = None, *,
                       limits: AppLimits | None = None, concurrency_limit: int = 1, device: str = "auto",
                       dtype: str = "auto", stream_audio: bool = False) -> gr.Blocks:
    """One app with a tab per pipeline. Each argument is a path, a ready pipeline / slot, or None.

    >>> build_combined_app().title
    'mm · multimodal demos'
    """
    limits = limits or AppLimits()
    common = {"concurrency_limit": concurrency_limit, "device": device, "dtype": dtype}
    vqa = vqa_model if isinstance(vqa_model, ModelSlot) else vqa_slot(vqa_model, **common)
    speech = speech_model if isinstance(speech_model, ModelSlot) else speech_slot(speech_model, **common)
    search = search_index if isinstance(search_index, ModelSlot) else search_slot(search_index, **common)
    with gr.Blocks(title="mm · multimodal demos", analytics_enabled=False) as app:
        gr.Markdown("## mm: on-device multimodal demos on LFM2\nVisual question answering, spoken conversation "
                    "and multilingual search, all running locally on the CPU.")
        with gr.Tabs():
            with gr.Tab("Visual Q&A", id="tab-vqa"):
                render_vqa(vqa, limits)
            with gr.Tab("Speech", id="tab-speech"):
                render_speech(speech, limits, stream_audio=stream_audio)
            with gr.Tab("Search", id="tab-search"):
                render_search(search, limits)
    return prepare(app, limits)
