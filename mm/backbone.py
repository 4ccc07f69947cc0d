"""The shared LFM2 language backbone: loading, dtype/threads, generation, streaming, int8.

Every generating pipeline (chat, VQA, speech) and the retriever share this
wrapper. It loads transformers' ``Lfm2ForCausalLM`` (or any causal LM the
checkpoint names) with its tokenizer, and generates with greedy or sampling
settings, stop strings, left-padded batches and token streaming.

>>> import tempfile, mm.testing
>>> bb = Backbone.load(mm.testing.make_tiny_lfm2(tempfile.mkdtemp()), dtype="float32")
>>> ids = bb.encode_chat([[{"role": "user", "content": "Hi"}]])
>>> out = bb.generate(ids, GenerationSettings(max_new_tokens=4))
>>> len(out[0]) <= 4
True
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm import hub, runtime
from mm.errors import CheckpointError, InvalidInputError, choices_text

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("int8", "int4")
#: ``auto``: mm's fast decode loop (mm.fast_decode) when the model and settings allow it, else transformers
ENGINE_CHOICES = ("auto", "fast", "transformers")


@dataclass
class GenerationSettings:
    """How to pick tokens. ``do_sample=False`` is greedy; the sampling knobs then must stay unset.

    >>> GenerationSettings(max_new_tokens=0).validate()
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: max_new_tokens must be a positive integer, got 0
    """

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    stop: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None

    def validate(self) -> GenerationSettings:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens <= 0:
            raise InvalidInputError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        sampling = {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}
        if not self.do_sample:
            given = [k for k, v in sampling.items() if v is not None]
            if given:
                raise InvalidInputError(
                    f"{', '.join(given)} only apply when sampling; pass do_sample=True or drop them"
                )
        if self.temperature is not None and self.temperature <= 0:
            raise InvalidInputError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k <= 0:
            raise InvalidInputError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise InvalidInputError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidInputError("stop must be a list of non-empty strings")
        return self

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for transformers' ``generate``."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            kwargs["temperature"] = self.temperature if self.temperature is not None else 1.0
            kwargs["top_k"] = self.top_k if self.top_k is not None else 0
            kwargs["top_p"] = self.top_p if self.top_p is not None else 1.0
        else:  # neutralise sampling defaults a checkpoint's generation_config may carry
            kwargs.update(temperature=None, top_k=None, top_p=None)
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs


class Backbone:
    """An LFM2 causal LM + tokenizer on one device/dtype. Build with :meth:`load` (cached)."""

    def __init__(self, model: Any, tokenizer: Any, path: Path, device: str, dtype: Any,
                 quantize: str | None = None, engine: str = "auto") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        self.device = device
        self.dtype = dtype
        self.quantize = quantize
        self.engine = check_engine(engine)
        self._fast: Any = None
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | Path, *, device: str = "auto", dtype: Any = "auto", quantize: str | None = None,
             threads: int | None = None) -> Backbone:
        """Resolve ``model`` and load it, sharing one copy per (path, device, dtype, quantize)."""
        runtime.configure_torch(threads)
        path = hub.resolve_model(model)
        device = runtime.resolve_device(device)
        torch_dtype = runtime.resolve_dtype(dtype, device)
        check_quantize(quantize, torch_dtype, QUANTIZE_CHOICES)
        key = ("causal-lm", str(path), device, str(torch_dtype), quantize)
        return runtime.cached_model(key, lambda: cls._load_uncached(path, device, torch_dtype, quantize))

    @classmethod
    def _load_uncached(cls, path: Path, device: str, dtype: Any, quantize: str | None) -> Backbone:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"could not load a causal language model from {str(path)!r}: {exc}") from exc
        model = model.to(device).eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if quantize == "int8":
            model = quantize_int8(model)
        elif quantize == "int4":
            from mm.quant import quantize_int4

            model = quantize_int4(model)
        log.info("loaded %s on %s as %s%s", path, device, dtype, f" ({quantize})" if quantize else "")
        return cls(model, tokenizer, path, device, dtype, quantize)

    # -- inputs --------------------------------------------------------------------------------
    def encode_chat(self, conversations: Sequence[Sequence[dict[str, Any]]], **template_kwargs: Any) -> dict:
        """Apply the checkpoint's chat template to each conversation; left-pad into one batch."""
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise CheckpointError(f"the tokenizer in {str(self.path)!r} has no chat template; pass plain text")
        texts = [
            self.tokenizer.apply_chat_template(list(conv), add_generation_prompt=True, tokenize=False,
                                               **template_kwargs)
            for conv in conversations
        ]
        return self.encode_text(texts, add_special_tokens=False)

    def encode_text(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> dict:
        """Tokenize ``texts`` into a left-padded batch (``input_ids``, ``attention_mask``)."""
        self.tokenizer.padding_side = "left"
        batch = self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
        if batch["input_ids"].shape[1] == 0:
            raise InvalidInputError("the prompt is empty after tokenization")
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    # -- generation ----------------------------------------------------------------------------
    def _generate_kwargs(self, inputs: dict, settings: GenerationSettings) -> dict[str, Any]:
        import torch

        settings.validate()
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        kwargs = dict(inputs)
        kwargs.update(settings.generate_kwargs())
        kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        if settings.stop:
            kwargs["stop_strings"] = list(settings.stop)
            kwargs["tokenizer"] = self.tokenizer
        return kwargs

    def fast(self) -> Any:
        """The :class:`mm.fast_decode.FastLfm2` over this model (built once), or None where it does not apply.

        Pipelines that drive decode steps themselves (audio, VQA) use its ``prefill``/``step``/``logits``.
        """
        from mm import fast_decode

        if self._fast is None and self.device == "cpu" and self._fast_target() is not None:
            backbone, lm_head = self._fast_target()
            self._fast = fast_decode.FastLfm2(backbone, lm_head=lm_head)
        return self._fast

    def _fast_target(self) -> tuple[Any, Any] | None:
        """``(LFM2 backbone or causal LM, LM head)`` the fast loop drives, or None when the model has none."""
        from mm import fast_decode

        return (self.model, None) if fast_decode.supports(self.model) else None

    def _fast_inputs_embeds(self, inputs: dict) -> Any:
        """Prompt embeddings for the fast prefill when token embeddings alone are not enough (None here)."""
        return None

    def resolve_engine(self, settings: GenerationSettings, engine: str | None = None) -> str:
        """``fast`` or ``transformers`` for these settings (``engine`` overrides the backbone's default)."""
        from mm import fast_decode

        engine = check_engine(engine or self.engine)
        if engine == "transformers":
            return engine
        reasons = []
        if self.device != "cpu" or self._fast_target() is None:
            reasons.append(f"the model ({type(self.model).__name__} on {self.device}) is not an LFM2 LM on CPU")
        else:
            config = _merged_generation_config(self.model, settings)
            bad = fast_decode.unsupported_generation_fields(config)
            if bad:
                reasons.append(f"the generation config sets {', '.join(bad)}")
        if not reasons:
            return "fast"
        if engine == "fast":
            raise InvalidInputError(f"engine='fast' cannot run here: {'; '.join(reasons)}; use engine='auto' or "
                                    "'transformers'")
        log.debug("using transformers' generate: %s", "; ".join(reasons))
        return "transformers"

    def _fast_generate(self, inputs: dict, settings: GenerationSettings, on_tokens: Any = None) -> Any:
        import torch

        settings.validate()
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        kwargs = settings.generate_kwargs()
        eos = _as_list(self.model.generation_config.eos_token_id)
        stop_check = None
        if settings.stop:
            from transformers import StopStringCriteria

            criteria = StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(settings.stop))
            stop_check = lambda ids: criteria(ids, None)  # noqa: E731
        return self.fast().generate(
            inputs["input_ids"], inputs.get("attention_mask"), max_new_tokens=settings.max_new_tokens,
            do_sample=settings.do_sample, temperature=kwargs.get("temperature", 1.0), top_k=kwargs.get("top_k", 0),
            top_p=kwargs.get("top_p", 1.0), repetition_penalty=settings.repetition_penalty
            or self.model.generation_config.repetition_penalty, eos_token_ids=eos,
            pad_token_id=self.tokenizer.pad_token_id, stop_check=stop_check, on_tokens=on_tokens,
            inputs_embeds=self._fast_inputs_embeds(inputs))

    def generate(self, inputs: dict, settings: GenerationSettings | None = None,
                 engine: str | None = None) -> list[list[int]]:
        """Generate for a left-padded batch; return the new token ids of each row (EOS/padding removed).

        ``engine`` (default: the backbone's, normally ``auto``) picks mm's fast decode loop or
        transformers' ``generate``; both give the same tokens.
        """
        import torch

        settings = settings or GenerationSettings()
        settings.validate()
        with self._lock, torch.inference_mode():
            if self.resolve_engine(settings, engine) == "fast":
                new = self._fast_generate(inputs, settings)
            else:
                out = self.model.generate(**self._generate_kwargs(inputs, settings))
                new = out[:, inputs["input_ids"].shape[1]:]
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.pad_token_id}
        rows = []
        for row in new.tolist():
            ids = []
            for tok in row:
                if tok in eos:
                    break
                ids.append(tok)
            rows.append(ids)
        return rows

    def decode(self, ids: Sequence[int], stop: Sequence[str] = ()) -> str:
        """Decode ids to text and cut it at the first stop string."""
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return cut_at_stop(text, stop)

    def stream(self, inputs: dict, settings: GenerationSettings | None = None,
               engine: str | None = None) -> Iterator[str]:
        """Yield text pieces of a single prompt as they are generated (stop strings honoured)."""
        import torch
        from transformers import TextIteratorStreamer

        settings = settings or GenerationSettings()
        if inputs["input_ids"].shape[0] != 1:
            raise InvalidInputError("stream() takes one prompt at a time")
        settings.validate()
        use_fast = self.resolve_engine(settings, engine) == "fast"
        kwargs = {} if use_fast else self._generate_kwargs(inputs, settings)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        kwargs["streamer"] = streamer
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    if use_fast:
                        streamer.put(inputs["input_ids"])  # the prompt, skipped like generate's first put
                        self._fast_generate(inputs, settings, on_tokens=streamer.put)
                        streamer.end()
                    else:
                        self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the consumer thread
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from _cut_stream(streamer, settings.stop)
        thread.join()
        if errors:
            raise errors[0]


def check_quantize(quantize: str | None, dtype: Any, choices: Sequence[str] = ("int8",)) -> str | None:
    """Validate ``quantize`` (None or one of ``choices``) against the resolved torch ``dtype``, before anything loads.

    ``int8`` (dynamic, fp32 activations) needs float32; ``int4`` (group-wise weight-only, :mod:`mm.quant`) runs
    bfloat16 or float32 activations. Loaders pass the ``choices`` they implement.
    """
    import torch

    if quantize is not None and quantize not in choices:
        raise InvalidInputError(f"quantize={quantize!r} is not supported here; valid: {choices_text(choices)}")
    if quantize == "int8" and dtype != torch.float32:
        raise InvalidInputError("quantize='int8' needs dtype='float32' (dynamic int8 runs fp32 activations)")
    if quantize == "int4" and dtype not in (torch.bfloat16, torch.float32):
        raise InvalidInputError(f"quantize='int4' needs dtype='bfloat16' or 'float32', got {dtype}")
    return quantize


def check_engine(engine: str) -> str:
    """Validate an ``engine`` name (``auto``, ``fast`` or ``transformers``)."""
    if engine not in ENGINE_CHOICES:
        raise InvalidInputError(f"engine={engine!r} is not supported; valid: {choices_text(ENGINE_CHOICES)}")
    return engine


def _merged_generation_config(model: Any, settings: GenerationSettings) -> Any:
    """The model's generation config with ``settings`` applied, as ``generate`` would see it."""
    import copy

    config = copy.deepcopy(model.generation_config)
    config.update(**settings.generate_kwargs())
    return config


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` before the earliest stop string.

    >>> cut_at_stop("a b STOP c", ["STOP"])
    'a b '
    """
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def _cut_stream(pieces: Iterator[str], stop: Sequence[str]) -> Iterator[str]:
    """Forward streamed pieces, holding back just enough text to cut at a stop string."""
    if not stop:
        yield from (p for p in pieces if p)
        return
    hold = max(len(s) for s in stop) - 1
    buffer = ""
    for piece in pieces:
        buffer += piece
        cut = cut_at_stop(buffer, stop)
        if len(cut) < len(buffer):
            if cut:
                yield cut
            for _ in pieces:  # drain so the generating thread can finish
                pass
            return
        if len(buffer) > hold:
            yield buffer[: len(buffer) - hold]
            buffer = buffer[len(buffer) - hold:]
    if buffer:
        yield buffer


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights int8, activations quantized per call)."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)
