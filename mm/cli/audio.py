"""Speech commands: ``mm s2s``, ``mm asr``, ``mm tts`` (LFM2-Audio)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mm.cli import app

DEFAULT_MODEL = "LiquidAI/LFM2-Audio-1.5B"

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Checkpoint directory or hub id")]
DtypeOpt = Annotated[str, typer.Option(help="auto, float32 or bfloat16")]
QuantOpt = Annotated[str | None, typer.Option(
    help="int8: dynamic int8 linear layers (float32); int4: 4-bit backbone on the native kernel, int8 elsewhere")]
TempOpt = Annotated[float, typer.Option(min=0.0, help="sampling temperature for text; 0 = greedy")]
AudioTempOpt = Annotated[float, typer.Option(min=0.0, help="sampling temperature for audio; 0 = greedy")]


def _sampling(temperature: float, audio_temperature: float | None, seed: int | None) -> dict:
    options: dict = {}
    knobs = {"temperature": temperature}
    if audio_temperature is not None:
        knobs["audio_temperature"] = audio_temperature
    sampled = {k: v for k, v in knobs.items() if v > 0}
    if sampled:
        options["do_sample"] = True
        options.update(sampled)
        if seed is not None:
            options["seed"] = seed
    return options


def _speak(pipe, item, options: dict, output: Path, stream: bool) -> None:
    if stream:
        _speak_streamed(pipe, item, options, output)
        return
    result = pipe(item, **options)
    if result.text:
        typer.echo(result.text)
    result.save(output)
    typer.echo(f"wrote {result.duration:.2f} s of audio to {output} (stop: {result.stop_reason})", err=True)


def _speak_streamed(pipe, item, options: dict, output: Path) -> None:
    """Print text as it comes and append each audio chunk to ``output`` as it arrives (16-bit wav, the
    header updated after every chunk, so the file is playable while the reply is still being generated)."""
    import numpy as np
    import soundfile as sf

    from mm.pipelines.speech import OUTPUT_RATE, AudioChunk

    output.parent.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    with sf.SoundFile(str(output), "w", OUTPUT_RATE, 1, subtype="PCM_16", format="WAV") as sink:
        for piece in pipe.stream(item, **options):
            if isinstance(piece, AudioChunk):
                sink.write(np.clip(piece.samples, -1.0, 1.0))
                sink.flush()
                seconds += len(piece.samples) / piece.sample_rate
                typer.echo(f"\r[audio {seconds:5.2f} s]", nl=False, err=True)
            else:
                typer.echo(piece, nl=False)
    typer.echo()
    typer.echo(f"wrote {seconds:.2f} s of audio to {output}", err=True)


@app.command()
def s2s(
    audio: Annotated[Path, typer.Argument(help="Input speech (wav, flac, ogg, ...)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the spoken reply (wav)")],
    model: ModelOpt = DEFAULT_MODEL,
    mode: Annotated[str, typer.Option(help="interleaved (low latency) or sequential")] = "interleaved",
    system: Annotated[str | None, typer.Option(help="System prompt")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Steps: text tokens + 80 ms audio frames")] = 512,
    temperature: TempOpt = 0.0,
    audio_temperature: AudioTempOpt = 0.0,
    seed: Annotated[int | None, typer.Option(help="Random seed when sampling")] = None,
    dtype: DtypeOpt = "auto",
    quantize: QuantOpt = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream",
                                         help="Print text as it comes and write audio to the file as it arrives")] = False,
) -> None:
    """Answer spoken input with text and speech (LFM2-Audio speech-to-speech)."""
    import mm
    from mm.validation import check_output_file

    output = check_output_file(output, "--output")
    from mm.runtime import configure_torch

    configure_torch()  # the CLI owns the process: MM_NUM_THREADS or all cores
    pipe = mm.pipeline("speech-to-speech", model=model, dtype=dtype, quantize=quantize, mode=mode)
    options = {"max_new_tokens": max_new_tokens, "system_prompt": system,
               **_sampling(temperature, audio_temperature, seed)}
    _speak(pipe, str(audio), options, output, stream)


@app.command()
def asr(
    audio: Annotated[Path, typer.Argument(help="Speech to transcribe (any length; split at silences)")],
    model: ModelOpt = DEFAULT_MODEL,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Token budget per piece")] = 512,
    dtype: DtypeOpt = "auto",
    quantize: QuantOpt = None,
) -> None:
    """Transcribe speech to text (LFM2-Audio ASR)."""
    import mm
    from mm.runtime import configure_torch

    configure_torch()  # the CLI owns the process: MM_NUM_THREADS or all cores
    pipe = mm.pipeline("asr", model=model, dtype=dtype, quantize=quantize)
    typer.echo(pipe(str(audio), max_new_tokens=max_new_tokens).text)


@app.command()
def tts(
    text: Annotated[str, typer.Argument(help="Text to speak")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the speech (wav)")],
    model: ModelOpt = DEFAULT_MODEL,
    voice: Annotated[str | None, typer.Option(help="US male, US female, UK male or UK female")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Steps (80 ms audio frames)")] = 1024,
    audio_temperature: AudioTempOpt = 0.0,
    seed: Annotated[int | None, typer.Option(help="Random seed when sampling")] = None,
    dtype: DtypeOpt = "auto",
    quantize: QuantOpt = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Write audio to the file as it arrives")] = False,
) -> None:
    """Synthesise speech from text (LFM2-Audio TTS)."""
    import mm
    from mm.validation import check_output_file

    output = check_output_file(output, "--output")
    from mm.runtime import configure_torch

    configure_torch()  # the CLI owns the process: MM_NUM_THREADS or all cores
    pipe = mm.pipeline("tts", model=model, dtype=dtype, quantize=quantize)
    options = {"max_new_tokens": max_new_tokens, "voice": voice, **_sampling(0.0, audio_temperature, seed)}
    _speak(pipe, text, options, output, stream)
