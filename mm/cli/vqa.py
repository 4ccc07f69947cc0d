"""``mm vqa IMAGE "question"``: ask LFM2-VL about an image from the command line."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from mm.cli import app


class Budget(StrEnum):
    """Image-token budget presets (see ``mm.encoders.vision_budget``)."""

    fast = "fast"
    balanced = "balanced"
    detailed = "detailed"


@app.command()
def vqa(
    image: Annotated[list[str], typer.Argument(help="Image file(s); several images go into one question")],
    question: Annotated[str, typer.Argument(help="The question about the image(s)")],
    budget: Annotated[Budget, typer.Option("--budget", "-b", help="Image-token budget")] = Budget.balanced,
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint directory or hub id")] = (
        "LiquidAI/LFM2-VL-450M"),
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy")] = 0.0,
    max_image_tokens: Annotated[int | None, typer.Option(min=1, help="Override the budget's token maximum")] = None,
    tiling: Annotated[bool | None, typer.Option("--tiling/--no-tiling", help="Override the budget's tiling")] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32 or bfloat16")] = "auto",
    quantize: Annotated[str | None, typer.Option(help="int8: dynamic int8 language-model layers (needs float32)")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print the answer as it is generated")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also print image tokens and timings")] = False,
) -> None:
    """Answer QUESTION about IMAGE with LFM2-VL (e.g. mm vqa photo.jpg "What is in it?" --budget fast)."""
    import mm
    from mm.runtime import configure_torch

    configure_torch()  # the CLI owns the process: MM_NUM_THREADS or all cores
    pipe = mm.pipeline("vqa", model=model, dtype=dtype, quantize=quantize)
    options: dict = {"max_new_tokens": max_new_tokens, "image_tokens": budget.value,
                     "do_sample": temperature > 0}
    if temperature > 0:
        options["temperature"] = temperature
    if max_image_tokens is not None:
        options["max_image_tokens"] = max_image_tokens
    if tiling is not None:
        options["tiling"] = tiling
    images = image if len(image) > 1 else image[0]
    if stream:
        for piece in pipe.stream(images, question, **options):
            typer.echo(piece, nl=False)
        typer.echo()
        if verbose:
            tokens = [pipe.image_tokens_for(*_size(p), **options) for p in image]
            typer.echo(f"image tokens: {tokens}", err=True)
        return
    result = pipe(images, question, **options)
    typer.echo(result.text)
    if verbose:
        timings = ", ".join(f"{k}={v:.3f}" for k, v in result.timings.items())
        generated = result.usage["generated_tokens"]
        typer.echo(f"image tokens: {result.image_tokens}; generated tokens: {generated}; {timings}", err=True)


def _size(path: str) -> tuple[int, int]:
    from mm.media.image import load_image

    return load_image(path).size
