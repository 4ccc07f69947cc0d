"""The one load sequence of every model family: resolve -> load in dtype -> quantize -> (engine).

>>> check_quantize("int4", None)
Traceback (most recent call last):
...
mm.errors.InvalidInputError: quantize='int4' is not supported; valid: 'int8'
>>> check_engine("turbo")
Traceback (most recent call last):
...
mm.errors.InvalidInputError: engine='turbo' is not supported; valid: 'auto', 'fast', 'transformers'
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mm import hub, runtime
from mm.errors import InvalidInputError, choices_text

log = logging.getLogger(__name__)

T = TypeVar("T")

QUANTIZE_CHOICES = ("int8",)
#: ``auto``: mm's fast decode loop (mm.fast_decode) when the model and settings allow it, else transformers
ENGINE_CHOICES = ("auto", "fast", "transformers")


def check_quantize(quantize: str | None, dtype: Any) -> str | None:
    """Validate ``quantize`` (None or ``int8``) against the resolved torch ``dtype``, before anything loads."""
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise InvalidInputError(f"quantize={quantize!r} is not supported; valid: {choices_text(QUANTIZE_CHOICES)}")
    if quantize == "int8":
        import torch

        if dtype != torch.float32:
            raise InvalidInputError("quantize='int8' needs dtype='float32' (dynamic int8 runs fp32 activations)")
    return quantize


def check_engine(engine: str) -> str:
    """Validate an ``engine`` name (``auto``, ``fast`` or ``transformers``)."""
    if engine not in ENGINE_CHOICES:
        raise InvalidInputError(f"engine={engine!r} is not supported; valid: {choices_text(ENGINE_CHOICES)}")
    return engine


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights int8, activations quantized per call)."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)


def load_model(family: str, model: str | Path, *, load: Callable[[Path, str, Any], T],
               quantize_int8: Callable[[T], T] | None = None, device: str = "auto", dtype: Any = "auto",
               quantize: str | None = None, required: tuple[str, ...] = ("config.json",),
               cpu_only: bool = False, cache: bool = True) -> T:
    """Load ``model`` of ``family``: the sequence every loader in :mod:`mm.models` runs.

    1. resolve ``model`` to a local folder (directory, HF cache, or a download when online);
    2. resolve ``device`` and ``dtype`` and check ``quantize`` against them, before any weight is read;
    3. ``load(path, device, torch_dtype)`` reads the weights in that dtype (``local_files_only``);
    4. ``quantize_int8(obj)`` when ``quantize="int8"`` (a family without the hook refuses it);
    5. the engine (mm's fast decode loop) is built by the model object on first use, over these weights.

    With ``cache`` the result is shared per (family, path, device, dtype, quantize) while anyone holds it.
    """
    path = hub.resolve_model(model, required=required)
    device = runtime.resolve_device(device)
    if cpu_only and device != "cpu":
        raise InvalidInputError(f"{family} runs on the CPU in mm; got device={device!r}")
    torch_dtype = runtime.resolve_dtype(dtype, device)
    check_quantize(quantize, torch_dtype)
    if quantize is not None and quantize_int8 is None:
        raise InvalidInputError(f"{family} models cannot be quantized in mm; drop quantize={quantize!r}")

    def build() -> T:
        obj = load(path, device, torch_dtype)
        if quantize == "int8":
            obj = quantize_int8(obj)
        log.info("loaded %s %s on %s as %s%s", family, path, device, torch_dtype, f" ({quantize})" if quantize else "")
        return obj

    if not cache:
        return build()
    return runtime.cached_model((family, str(path), device, str(torch_dtype), quantize), build)
