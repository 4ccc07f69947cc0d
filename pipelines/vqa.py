"""``mm.pipeline("vqa")``: visual question answering with LFM2-VL and a tunable image-token budget.

>>> import tempfile, numpy as np, mm, mm.testing
>>> vqa = mm.pipeline("vqa", model=mm.testing.make_tiny_lfm2_vl(tempfile.mkdtemp()), dtype="float32")
>>> image = np.zeros((512, 512, 3), np.uint8)
>>> result = vqa(image, "What is this?", max_new_tokens=4)
>>> result.image_tokens, vqa(image, "What is this?", image_tokens="fast", max_new_tokens=4).image_tokens
([256], [64])
>>> result.answer == result.text, result.usage["image_tokens"]
(True, 256)
>>> [r.image_tokens for r in vqa([(image, "Q1"), (np.zeros((64, 64, 3), np.uint8), "Q2")], max_new_tokens=2)]
[[256], [64]]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mm.encoders.vision import VisionInputs
from mm.encoders.vision_budget import PRESETS, resolve_budget
from mm.encoders.vision_config import VisionSettings
from mm.encoders.vision_geometry import marker_tokens

from mm import options as opts
from mm.backbone import REPETITION_PENALTY, GenerationSettings, check_engine
from mm.base import Pipeline
from mm.errors import CheckpointError, InvalidInputError, choices_text
from mm.media.image import DEFAULT_MAX_PIXELS, load_image
from mm.models.lfm2_vl import IMAGE_TOKEN, load_lfm2_vl
from mm.results import GenerationResult

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
_BUDGET_KEYS = ("image_tokens", "min_image_tokens", "max_image_tokens", "tiling", "max_tiles", "thumbnail")

#: the image-token budget options (preprocess stage; see :mod:`mm.encoders.vision_budget`)
BUDGET_OPTIONS = (
    opts.Option("image_tokens", "balanced", "preprocess", opts.one_of(*PRESETS),
                "image-token budget preset: " + ", ".join(PRESETS)),
    opts.Option("min_image_tokens", None, "preprocess", opts.optional(opts.positive_int),
                "fewest image tokens per image"),
    opts.Option("max_image_tokens", None, "preprocess", opts.optional(opts.positive_int),
                "most image tokens per image (tile)"),
    opts.Option("tiling", None, "preprocess", opts.optional(opts.boolean), "split large images into tiles"),
    opts.Option("max_tiles", None, "preprocess", opts.optional(opts.positive_int), "most tiles per image"),
    opts.Option("thumbnail", None, "preprocess", opts.optional(opts.boolean),
                "add a whole-image thumbnail to tiled images"),
)


@dataclass
class VQAResult(GenerationResult):
    """One answer, what its images cost (``image_tokens`` per image), and where the time went.

    ``usage``: ``prompt_tokens`` (image tokens included), ``generated_tokens``, ``image_tokens`` (total).
    """

    image_tokens: list[int] = field(default_factory=list)

    @property
    def answer(self) -> str:
        """The answer text (an alias of ``text``)."""
        return self.text


@dataclass
class _Prepared:
    """One (conversation, images) item after image loading and preprocessing."""

    messages: list[dict[str, Any]]
    vision: VisionInputs
    load_s: float


class VQAPipeline(Pipeline):
    """Answer questions about images with LFM2-VL.

    An item is ``(image, question)``, ``(images, question)`` with a list of images, a dict
    ``{"image" | "images": ..., "question": ...}``, or a conversation: a list of
    ``{"role", "content"}`` messages whose content is text or a list of
    ``{"type": "image", "image": ...}`` / ``{"type": "text", "text": ...}`` parts (several turns,
    several images). ``vqa(image, question)`` is one item; a list of items is a batch.
    Images are paths, bytes, ``PIL.Image`` objects or numpy arrays (see :mod:`mm.media.image`).
    """

    task = "vqa"
    init_options = {"threads": None, "batch_size": 8, "max_pixels": DEFAULT_MAX_PIXELS, "engine": "auto",
                    "quantize": None}
    call_options = opts.options(opts.GENERATION_OPTIONS, (REPETITION_PENALTY, opts.SYSTEM_PROMPT), BUDGET_OPTIONS)

    def setup(self, threads=None, batch_size=8, max_pixels=DEFAULT_MAX_PIXELS, engine="auto", quantize=None) -> None:
        self.batch_size = opts.positive_int(batch_size, "batch_size")
        self.max_pixels = max_pixels
        self.engine = check_engine(engine)  # "auto" (mm's fast decode loop where it applies), "fast", "transformers"
        self.vl = load_lfm2_vl(self.model_id, device=self.device, dtype=self.dtype, quantize=quantize)

    def check_call(self, options: dict[str, Any]) -> None:
        opts.check_sampling(options)

    @property
    def vision_settings(self) -> VisionSettings:
        """The checkpoint's own image-processing settings (the ``balanced`` budget)."""
        return self.vl.preprocessor.settings

    def budget(self, **options: Any) -> VisionSettings:
        """Settings a call with these budget options would use (``image_tokens``, ``max_image_tokens`` ...)."""
        budget = {k: options.get(k) for k in _BUDGET_KEYS if options.get(k) is not None}
        return resolve_budget(self.vision_settings, **budget)

    def image_tokens_for(self, width: int, height: int, **options: Any) -> int:
        """Image tokens an image of this size costs under the given budget options, without running anything.

        >>> # vqa.image_tokens_for(1024, 768) -> 1536 on LFM2-VL-450M; image_tokens="fast" -> 64
        """
        return self.vl.preprocessor.plan(height, width, self.budget(**options)).num_image_tokens

    # -- items ----------------------------------------------------------------------------------
    def __call__(self, inputs: Any, question: str | None = None, **options: Any) -> Any:
        """``vqa(image, "question")``, ``vqa([(image, q), ...])``, ``vqa(conversation)``."""
        if question is not None:
            return super().__call__((inputs, question), **options)
        return super().__call__(inputs, **options)

    def stream(self, inputs: Any, question: str | None = None, **options: Any) -> Iterator[str]:
        """Yield the answer's text pieces as they are generated (one item)."""
        return super().stream((inputs, question) if question is not None else inputs, **options)

    def is_batch(self, inputs: Any) -> bool:
        if isinstance(inputs, dict) or _is_pair(inputs):
            return False
        if isinstance(inputs, list | tuple) and inputs and all(isinstance(m, dict) and "role" in m for m in inputs):
            return False  # one conversation
        return isinstance(inputs, list | tuple)

    def _conversation(self, item: Any, system_prompt: str | None) -> tuple[list[dict[str, Any]], list[Any]]:
        """Normalise an item into template messages (images as placeholders) and its image sources."""
        if _is_pair(item):
            item = {"images": item[0], "question": item[1]}
        if isinstance(item, dict) and "role" not in item:
            unknown = set(item) - {"image", "images", "question"}
            if unknown or ("image" in item) == ("images" in item) or "question" not in item:
                raise InvalidInputError(
                    "a dict item needs 'question' and one of 'image' / 'images', got keys "
                    f"{choices_text(item)}"
                )
            sources = item.get("images", item.get("image"))
            sources = list(sources) if isinstance(sources, list | tuple) else [sources]
            question = item["question"]
            if not isinstance(question, str) or not question.strip():
                raise InvalidInputError("the question is empty; pass some text")
            content = [*({"type": "image", "image": s} for s in sources), {"type": "text", "text": question}]
            item = [{"role": "user", "content": content}]
        if not (isinstance(item, list | tuple) and item and all(isinstance(m, dict) for m in item)):
            raise InvalidInputError(
                f"vqa takes (image, question), a dict or a conversation (list of messages), got {type(item).__name__}"
            )
        messages: list[dict[str, Any]] = []
        images: list[Any] = []
        for i, message in enumerate(item):
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                raise InvalidInputError(f"message {i}: role must be one of {ROLES}, got {role!r}")
            if isinstance(content, str):
                messages.append({"role": role, "content": content})
                continue
            if not isinstance(content, list | tuple) or not content:
                raise InvalidInputError(f"message {i}: content must be text or a non-empty list of parts")
            parts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "image":
                    if "image" not in part:
                        raise InvalidInputError(f"message {i}: an image part needs its 'image' (path, bytes, PIL ...)")
                    images.append(part["image"])
                    parts.append({"type": "image"})
                elif kind == "text" and isinstance(part.get("text"), str):
                    if IMAGE_TOKEN in part["text"]:
                        raise InvalidInputError(f"message {i}: text may not contain the literal {IMAGE_TOKEN}; "
                                                "pass images as image parts")
                    parts.append({"type": "text", "text": part["text"]})
                else:
                    raise InvalidInputError(f"message {i}: each part must be {{'type': 'image', 'image': ...}} or "
                                            f"{{'type': 'text', 'text': str}}, got {part!r}")
            messages.append({"role": role, "content": parts})
        if not images:
            raise InvalidInputError("no image given; the vqa pipeline needs at least one image (use 'chat' for text)")
        if system_prompt:
            messages = [m for m in messages if m["role"] != "system"]
            messages.insert(0, {"role": "system", "content": system_prompt})
        return messages, images

    def preprocess(self, item: Any, system_prompt: str | None = None, **budget: Any) -> _Prepared:
        settings = self.budget(**budget)
        messages, sources = self._conversation(item, system_prompt)
        t0 = time.perf_counter()
        images = [load_image(source, max_pixels=self.max_pixels) for source in sources]
        vision = self.vl.preprocessor(images, settings)
        return _Prepared(messages, vision, time.perf_counter() - t0)

    # -- model ----------------------------------------------------------------------------------
    def _prompt(self, prepared: _Prepared) -> str:
        vision = prepared.vision
        for plan in vision.plans:
            missing = [tok for tok in marker_tokens(plan, vision.settings) if tok not in self.vl.special_vocab]
            if missing:
                raise InvalidInputError(
                    f"a {plan.cols}x{plan.rows} tile grid needs marker tokens the tokenizer lacks ({missing[0]}); "
                    "lower max_tiles (grids up to 10x10 have markers)"
                )
        text = self.vl.tokenizer.apply_chat_template(prepared.messages, add_generation_prompt=True, tokenize=False)
        return self.vl.preprocessor.expand_prompt(text, vision.plans, vision.settings, image_token=IMAGE_TOKEN)

    def _inputs(self, batch: Sequence[_Prepared]) -> tuple[dict[str, Any], VisionInputs, float]:
        """Tokenize (left-padded), concatenate the tiles of all items, run the vision tower."""
        import torch

        texts = [self._prompt(p) for p in batch]
        inputs = self.vl.encode_text(texts, add_special_tokens=False)
        expected = sum(sum(p.vision.num_image_tokens) for p in batch)
        found = int((inputs["input_ids"] == self.vl.model.config.image_token_id).sum())
        if found != expected:
            raise CheckpointError(f"the tokenizer produced {found} image tokens, the images need {expected}")
        width = max(p.vision.pixel_values.shape[1] for p in batch)

        def padded(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, 0) * (t.ndim - 2) + (0, width - t.shape[1]))

        vision = VisionInputs(
            torch.cat([padded(p.vision.pixel_values) for p in batch]),
            torch.cat([padded(p.vision.pixel_attention_mask) for p in batch]),
            torch.cat([p.vision.spatial_shapes for p in batch]),
            [plan for p in batch for plan in p.vision.plans],
            batch[0].vision.settings,
        )
        t0 = time.perf_counter()
        inputs["mm_encoder_outputs"] = {"image": self.vl.image_features(vision)}
        return inputs, vision, time.perf_counter() - t0

    def _forward(self, batch: list[_Prepared], **options: Any) -> list[VQAResult]:
        settings = GenerationSettings.from_options(options)
        t0 = time.perf_counter()
        inputs, _, vision_s = self._inputs(batch)
        t1 = time.perf_counter()
        rows = self.vl.generate_rows(inputs, settings, engine=self.engine)
        t2 = time.perf_counter()
        prompt_tokens = inputs["attention_mask"].sum(1).tolist()
        results = []
        for prepared, row, n_prompt in zip(batch, rows, prompt_tokens, strict=True):
            text, reason = self.vl.finish(row, settings)
            timings = {"load_preprocess_s": prepared.load_s, "tokenize_s": t1 - t0 - vision_s, "vision_s": vision_s,
                       "generate_s": t2 - t1}
            image_tokens = prepared.vision.num_image_tokens
            usage = {"prompt_tokens": n_prompt, "generated_tokens": len(row.token_ids),
                     "image_tokens": sum(image_tokens)}
            results.append(VQAResult(text, row.token_ids, reason, usage, timings, image_tokens))
        return results

    def postprocess(self, output: VQAResult) -> VQAResult:
        output.timings["total_s"] = sum(output.timings.values())
        return output

    def _stream(self, item: Any, **options: Any) -> Iterator[str]:
        settings = GenerationSettings.from_options(self.stage_options(options, "forward"))
        inputs, _, _ = self._inputs([self.preprocess(item, **self.stage_options(options, "preprocess"))])
        yield from self.vl.stream(inputs, settings, engine=self.engine)


def _is_pair(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str)
