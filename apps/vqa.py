"""The visual question answering app: upload an image, ask, read the answer as it streams.

>>> app = build_vqa_app(None)            # no model: the page explains how to start it with one
>>> type(app).__name__
'Blocks'

Start it from the command line with ``mm serve --task vqa --vqa-model DIR``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
from mm.apps.common import (
    AppLimits,
    ModelSlot,
    check_new_tokens,
    check_text,
    checked_image,
    fmt_seconds,
    load_image,
    prepare,
    status_html,
    stream_in_thread,
    user_errors,
)

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)

PRESETS = ("fast", "balanced", "detailed")
PRESET_HELP = {
    "fast": "fewest image tokens, quickest answer",
    "balanced": "the default trade-off",
    "detailed": "most image tokens: small text and fine detail",
}


def vqa_slot(model: Any, *, concurrency_limit: int = 1, device: str = "auto", dtype: str = "auto") -> ModelSlot:
    """A model slot for ``model``: a checkpoint directory / hub id, a ready VQA pipeline, or None."""

    def load(path: Any) -> Any:
        import mm

        return mm.pipeline("vqa", model=os.fspath(path), device=device, dtype=dtype)

    return ModelSlot.of("vqa", model, load, concurrency_limit=concurrency_limit,
                        missing_hint="Start the app with --vqa-model DIR (an LFM2-VL checkpoint folder).")


def image_token_count(pipe: Any, image: Any, preset: str) -> int | None:
    """Image tokens ``image`` costs under ``preset`` (None when the pipeline cannot say)."""
    counter = getattr(pipe, "image_tokens_for", None)
    if counter is None:
        return None
    return int(counter(image.width, image.height, image_tokens=preset))


def _stats(image_tokens: int | None, first: float | None, total: float, pieces: int, done: bool) -> str:
    parts = []
    if image_tokens is not None:
        parts.append(f"image tokens: {image_tokens}")
    if first is not None:
        parts.append(f"first token: {fmt_seconds(first)}")
    parts.append(f"{'latency' if done else 'elapsed'}: {fmt_seconds(total)}")
    if done and pieces and total > 0:
        parts.append(f"{pieces / total:.1f} pieces/s")
    return status_html(" · ".join(parts), "ok" if done else "info")


def answer_stream(slot: ModelSlot, limits: AppLimits, image: Any, question: str, preset: str,
                  max_new_tokens: Any) -> Iterator[tuple[str, str]]:
    """Validate the request, then yield ``(answer so far, stats html)`` as the model generates."""
    img = load_image(image, limits)
    question = check_text(question, "question", limits)
    if preset not in PRESETS:
        raise InvalidInputError(f"unknown image budget {preset!r}; choose one of {', '.join(PRESETS)}")
    n_new = check_new_tokens(max_new_tokens, limits)
    pipe = slot.get()
    tokens = image_token_count(pipe, img, preset)
    t0 = time.perf_counter()
    first: float | None = None
    answer = ""
    pieces = 0
    yield "", status_html("reading the image…", "info")
    for piece in stream_in_thread(lambda: pipe.stream(img, question, image_tokens=preset, max_new_tokens=n_new)):
        if not piece:
            continue
        if first is None:
            first = time.perf_counter() - t0
        answer += piece
        pieces += 1
        yield answer, _stats(tokens, first, time.perf_counter() - t0, pieces, False)
    yield answer, _stats(tokens, first, time.perf_counter() - t0, pieces, True)


def check_image_upload(slot: ModelSlot, limits: AppLimits, image: Any) -> str:
    """Status box for a freshly uploaded image: its size and token cost per budget, or what is wrong with it."""
    if image is None:
        return ""
    try:
        img = load_image(image, limits)
    except InvalidInputError as exc:
        return status_html(str(exc), "error")
    text = f"image ready: {img.width}x{img.height} pixels"
    if slot.ready:
        try:
            costs = {p: image_token_count(slot.pipeline, img, p) for p in PRESETS}
        except Exception:  # the cost preview is a nicety: asking still reports any real problem
            log.exception("could not compute the image-token preview")
            costs = {}
        if costs and None not in costs.values():
            text += " · image tokens: " + ", ".join(f"{p} {n}" for p, n in costs.items())
    return status_html(text, "ok")


def render_vqa(slot: ModelSlot, limits: AppLimits) -> dict[str, Any]:
    """Lay out the VQA tab inside the current Blocks context; returns its components by name."""
    model_status = gr.HTML(slot.status(), elem_id="vqa-model-status")
    with gr.Row():
        with gr.Column(scale=1):
            image = checked_image(label="Image", image_mode=None, sources=["upload", "clipboard"],
                                 elem_id="vqa-image", height=320)
            image_status = gr.HTML("", elem_id="vqa-image-status")
            question = gr.Textbox(label="Question", placeholder="What is in this picture?", lines=2,
                                  max_length=limits.max_text_chars, elem_id="vqa-question")
            with gr.Row():
                preset = gr.Radio(list(PRESETS), value="balanced", label="Image budget",
                                  info=" · ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()),
                                  elem_id="vqa-preset")
                max_new = gr.Slider(1, limits.max_new_tokens, value=min(128, limits.max_new_tokens), step=1,
                                    label="Max new tokens", elem_id="vqa-max-new")
            ask = gr.Button("Ask", variant="primary", elem_id="vqa-ask")
        with gr.Column(scale=1):
            answer = gr.Textbox(label="Answer", lines=8, interactive=False, elem_id="vqa-answer")
            stats = gr.HTML("", elem_id="vqa-stats")

    image.upload(lambda img: check_image_upload(slot, limits, img), image, image_status, show_progress="hidden",
                 queue=False, api_visibility="private")
    image.clear(lambda: "", None, image_status, queue=False, api_visibility="private")

    @user_errors
    def run(img: Any, q: str, p: str, n: Any) -> Iterator[tuple[str, str]]:
        yield from answer_stream(slot, limits, img, q, p, n)

    inputs = [image, question, preset, max_new]
    ask.click(run, inputs, [answer, stats], api_name="vqa", **slot.event_options)
    question.submit(run, inputs, [answer, stats], api_visibility="private", **slot.event_options)
    return {"image": image, "question": question, "preset": preset, "max_new_tokens": max_new,
            "answer": answer, "stats": stats, "ask": ask, "model_status": model_status}


def build_vqa_app(model: Any = None, *, limits: AppLimits | None = None, concurrency_limit: int = 1,
                  device: str = "auto", dtype: str = "auto") -> gr.Blocks:
    """The VQA app. ``model`` is an LFM2-VL checkpoint directory, a ready pipeline, or None.

    >>> build_vqa_app(None).title
    'mm · visual question answering'
    """
    limits = limits or AppLimits()
    slot = model if isinstance(model, ModelSlot) else vqa_slot(model, concurrency_limit=concurrency_limit,
                                                                device=device, dtype=dtype)
    with gr.Blocks(title="mm · visual question answering", analytics_enabled=False) as app:
        gr.Markdown("## Visual question answering (LFM2-VL)\nUpload an image, ask a question about it, "
                    "and pick how many image tokens the model may spend on it.")
        render_vqa(slot, limits)
    return prepare(app, limits)
