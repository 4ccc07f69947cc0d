"""The shared LFM2 language backbone: generation, streaming, stop strings, seeds.

Chat and VQA generate through this wrapper around transformers' ``Lfm2ForCausalLM`` (or any
causal LM the checkpoint names) and its tokenizer: greedy or sampling settings, stop strings,
left-padded batches, token streaming, mm's fast decode loop. Loading lives in :mod:`mm.models`
(:func:`mm.models.lfm2.load_lfm2`; ``Backbone.load`` calls it).

>>> import tempfile, mm.testing
>>> bb = Backbone.load(mm.testing.make_tiny_lfm2(tempfile.mkdtemp()), dtype="float32")
>>> ids = bb.encode_chat([[{"role": "user", "content": "Hi"}]])
>>> out = bb.generate(ids, GenerationSettings(max_new_tokens=4))
>>> len(out[0]) <= 4
True
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm import runtime
from mm.errors import CheckpointError, ContextLengthError, InvalidInputError
from mm.models.loading import (  # noqa: F401  (re-exported: the checks every generating pipeline uses)
    ENGINE_CHOICES,
    QUANTIZE_CHOICES,
    check_engine,
    check_quantize,
    quantize_int8,
)

log = logging.getLogger(__name__)



def _repetition_penalty():
    from mm.options import Option, optional, positive_float

    return Option("repetition_penalty", None, "forward", optional(positive_float),
                  "penalise tokens already in the prompt or reply (> 1 discourages repeats)")


#: the text models' extra generation option (declared once, used by chat and vqa)
REPETITION_PENALTY = _repetition_penalty()


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
        """Check every field with its declared option (:data:`mm.options.GENERATION_OPTIONS`)."""
        from mm import options

        for opt in options.GENERATION_OPTIONS:
            setattr(self, opt.name, opt.validate(getattr(self, opt.name)))
        self.repetition_penalty = REPETITION_PENALTY.validate(self.repetition_penalty)
        options.check_sampling(vars(self))
        return self

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> GenerationSettings:
        """The settings among a call's resolved options (other names are left out), validated."""
        return cls(**{k: v for k, v in options.items() if k in cls.__dataclass_fields__}).validate()

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
        self._fast: dict[str, Any] = {}  # FastLfm2 per kernels choice ("native", "torch")
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | Path, *, device: str = "auto", dtype: Any = "auto",
             quantize: str | None = None) -> Backbone:
        """Load ``model`` through :func:`mm.models.lfm2.load_lfm2` (one shared copy per path/device/dtype)."""
        from mm.models.lfm2 import load_lfm2

        return load_lfm2(model, device=device, dtype=dtype, quantize=quantize)

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
        """Tokenize ``texts`` into a left-padded batch (``input_ids``, ``attention_mask``).

        A prompt longer than the model's context raises :class:`ContextLengthError`; one that cannot
        fit even at the longest vocabulary token per token fails before tokenizing.
        """
        limit = self.context_length
        if limit:
            check_prompt_chars(texts, limit, self.longest_token_chars)
        self.tokenizer.padding_side = "left"
        batch = self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
        if batch["input_ids"].shape[1] == 0:
            raise InvalidInputError("the prompt is empty after tokenization")
        if limit and batch["input_ids"].shape[1] > limit:
            lengths = batch["attention_mask"].sum(1).tolist()
            worst = max(range(len(lengths)), key=lengths.__getitem__)
            raise ContextLengthError(f"prompt {worst} has {lengths[worst]:,} tokens, more than the model's context "
                                     f"of {limit:,} tokens; shorten it")
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    @property
    def context_length(self) -> int | None:
        """The model's context in tokens (``max_position_embeddings``), or None when the config has none."""
        config = getattr(self.model, "config", None)
        for cfg in (getattr(config, "text_config", None), config):
            n = getattr(cfg, "max_position_embeddings", None)
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                return n
        return None

    @property
    def longest_token_chars(self) -> int:
        """Characters in the longest vocabulary entry: no token covers more of a prompt (cached)."""
        if getattr(self, "_longest_token", None) is None:
            self._longest_token = max((len(t) for t in self.tokenizer.get_vocab()), default=1) or 1
        return self._longest_token

    def check_context(self, inputs: dict, settings: GenerationSettings) -> None:
        """Raise :class:`ContextLengthError` if prompt tokens + ``max_new_tokens`` exceed the context."""
        limit = self.context_length
        prompt = int(inputs["input_ids"].shape[1])
        if limit and prompt + settings.max_new_tokens > limit:
            raise ContextLengthError(
                f"the prompt ({prompt:,} tokens) + max_new_tokens ({settings.max_new_tokens:,}) exceed the model's "
                f"context of {limit:,} tokens; shorten the prompt or lower max_new_tokens"
            )

    # -- generation ----------------------------------------------------------------------------
    def _generate_kwargs(self, inputs: dict, settings: GenerationSettings) -> dict[str, Any]:

        settings.validate()
        kwargs = dict(inputs)
        kwargs.update(settings.generate_kwargs())
        kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        if settings.stop:
            kwargs["stop_strings"] = list(settings.stop)
            kwargs["tokenizer"] = self.tokenizer
        return kwargs

    def fast(self, engine: str = "auto") -> Any:
        """The :class:`mm.fast_decode.FastLfm2` over this model for ``engine`` (built once), or None where it does
        not apply: ``native`` on mm's kernels (an error when they cannot run), ``fast`` on torch's ops, ``auto`` the
        native one when the kernels run here. ``fast`` keeps transformers' bf16 prefill products (bit-exact tokens);
        the others upcast them to float32 where measured faster (:mod:`mm.bf16_prefill`).

        Pipelines that drive decode steps themselves (audio, VQA) use its ``prefill``/``step``/``logits``.
        """
        from mm import fast_decode

        if self.device != "cpu" or self._fast_target() is None:
            return None
        kernels = {"native": "native", "fast": "torch"}.get(engine, "auto")
        if kernels not in self._fast:
            backbone, lm_head = self._fast_target()
            # engine="fast" is the bit-exact reference: its bf16 prefill keeps transformers' own bf16 products
            upcast = "never" if kernels == "torch" else "auto"
            built = fast_decode.FastLfm2(backbone, lm_head=lm_head, kernels=kernels, prefill_upcast=upcast)
            self._fast[kernels] = built
            if kernels == "auto" and built.native is not None:  # the same object serves engine="native"
                self._fast.setdefault("native", built)
        return self._fast[kernels]

    def _fast_target(self) -> tuple[Any, Any] | None:
        """``(LFM2 backbone or causal LM, LM head)`` the fast loop drives, or None when the model has none."""
        from mm import fast_decode

        return (self.model, None) if fast_decode.supports(self.model) else None

    def _fast_inputs_embeds(self, inputs: dict) -> Any:
        """Prompt embeddings for the fast prefill when token embeddings alone are not enough (None here)."""
        return None

    def resolve_engine(self, settings: GenerationSettings, engine: str | None = None) -> str:
        """``native``, ``fast`` or ``transformers`` for these settings (``engine`` overrides the backbone's default)."""
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
            if engine == "fast":
                return "fast"
            return "native" if self.fast(engine).native is not None else "fast"
        if engine in ("fast", "native"):
            raise InvalidInputError(f"engine={engine!r} cannot run here: {'; '.join(reasons)}; use engine='auto' or "
                                    "'transformers'")
        log.debug("using transformers' generate: %s", "; ".join(reasons))
        return "transformers"

    def _fast_generate(self, inputs: dict, settings: GenerationSettings, on_tokens: Any = None,
                       engine: str = "auto") -> Any:
        settings.validate()
        kwargs = settings.generate_kwargs()
        eos = _as_list(self.model.generation_config.eos_token_id)
        stop_check = None
        if settings.stop:
            from transformers import StopStringCriteria

            criteria = StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(settings.stop))
            stop_check = lambda ids: criteria(ids, None)  # noqa: E731
        return self.fast(engine).generate(
            inputs["input_ids"], inputs.get("attention_mask"), max_new_tokens=settings.max_new_tokens,
            do_sample=settings.do_sample, temperature=kwargs.get("temperature", 1.0), top_k=kwargs.get("top_k", 0),
            top_p=kwargs.get("top_p", 1.0), repetition_penalty=settings.repetition_penalty
            or self.model.generation_config.repetition_penalty, eos_token_ids=eos,
            pad_token_id=self.tokenizer.pad_token_id, stop_check=stop_check, on_tokens=on_tokens,
            inputs_embeds=self._fast_inputs_embeds(inputs), generator=runtime.seeded_generator(settings.seed))

    def generate(self, inputs: dict, settings: GenerationSettings | None = None,
                 engine: str | None = None) -> list[list[int]]:
        """Generate for a left-padded batch; return the new token ids of each row (EOS/padding removed).

        ``engine`` (default: the backbone's, normally ``auto``) picks mm's decode loop on its native kernels
        (``native``), the same loop on torch's ops (``fast``: the same tokens as transformers) or transformers'
        ``generate``. The native kernels sum in another order (and quantize activations per block for int8/int4),
        so their tokens can part from transformers' where two logits nearly tie (agreement measured in
        docs/backbone-speed.md).
        """
        return [row.token_ids for row in self.generate_rows(inputs, settings, engine)]

    def generate_rows(self, inputs: dict, settings: GenerationSettings | None = None,
                      engine: str | None = None) -> list[Generated]:
        """Like :meth:`generate`, and say for each row whether the model ended it (EOS) or not."""
        import torch

        settings = settings or GenerationSettings()
        settings.validate()
        self.check_context(inputs, settings)
        with self._lock, torch.inference_mode():
            resolved = self.resolve_engine(settings, engine)
            if resolved != "transformers":
                new = self._fast_generate(inputs, settings, engine=resolved)
            else:
                with _seeded_global_rng(settings.seed):
                    out = self.model.generate(**self._generate_kwargs(inputs, settings))
                new = out[:, inputs["input_ids"].shape[1]:]
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.pad_token_id}
        rows = []
        for row in new.tolist():
            ids: list[int] = []
            ended = False
            for tok in row:
                if tok in eos:
                    ended = True
                    break
                ids.append(tok)
            rows.append(Generated(ids, ended))
        return rows

    def finish(self, row: Generated, settings: GenerationSettings) -> tuple[str, str]:
        """``(text, stop_reason)`` of a generated row: the text cut at a stop string, and why it ended."""
        full = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        text = cut_at_stop(full, settings.stop)
        if len(text) < len(full):
            return text, "stop"
        if row.ended or len(row.token_ids) < settings.max_new_tokens:
            return text, "eos"
        return text, "max_new_tokens"

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
        self.check_context(inputs, settings)
        resolved = self.resolve_engine(settings, engine)
        use_fast = resolved != "transformers"
        kwargs = {} if use_fast else self._generate_kwargs(inputs, settings)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        kwargs["streamer"] = streamer
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    if use_fast:
                        streamer.put(inputs["input_ids"])  # the prompt, skipped like generate's first put
                        self._fast_generate(inputs, settings, on_tokens=streamer.put, engine=resolved)
                        streamer.end()
                    else:
                        with _seeded_global_rng(settings.seed):
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


def check_prompt_chars(texts: Sequence[str], limit: int, longest_token: int) -> None:
    """Fail at once (before tokenizing) on a prompt too long for ``limit`` tokens of ``longest_token`` chars.

    >>> check_prompt_chars(["x" * 100], limit=10, longest_token=8)
    Traceback (most recent call last):
    ...
    mm.errors.ContextLengthError: prompt 0 is 100 characters long: at least 13 tokens, more than the model's context of 10 tokens; shorten it
    """
    for i, text in enumerate(texts):
        if len(text) > limit * longest_token:
            raise ContextLengthError(
                f"prompt {i} is {len(text):,} characters long: at least {-(-len(text) // longest_token):,} tokens, "
                f"more than the model's context of {limit:,} tokens; shorten it"
            )


@dataclass
class Generated:
    """One generated row: its new token ids (EOS and padding removed) and whether an EOS ended it."""

    token_ids: list[int]
    ended: bool


@contextlib.contextmanager
def _seeded_global_rng(seed: int | None) -> Iterator[None]:
    """Seed transformers' ``generate`` (it samples from torch's global RNG) and restore that RNG after.

    transformers' ``generate`` takes no generator, so a seeded call forks the global CPU RNG state:
    the state after the call is the state before it. mm's fast loop uses its own generator instead.
    """
    if seed is None:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


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
