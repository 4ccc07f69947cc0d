"""Task registry and the :func:`pipeline` factory.

A task maps a name (plus aliases) to a pipeline class, given either as the class
itself or as a lazy ``"module:attribute"`` string so that ``import mm`` stays
light. Third parties add their own tasks with :func:`register_task`.

>>> import mm
>>> "chat" in [t.name for t in mm.tasks()]
True
>>> mm.registry.resolve_task("visual-question-answering").name
'vqa'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from mm.errors import UnknownTaskError, choices_text


@dataclass(frozen=True)
class TaskSpec:
    """One registered task."""

    name: str
    target: Any  # a Pipeline subclass or "module:attr"
    aliases: tuple[str, ...] = ()
    default_model: str | None = None
    description: str = ""
    extra: str | None = None  # the pip extra the task needs, for error messages
    defaults: dict[str, Any] = field(default_factory=dict)

    def load_class(self) -> type:
        """Import and return the pipeline class."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f" Install it with: pip install 'mm[{self.extra}]'." if self.extra else ""
            raise UnknownTaskError(
                f"task {self.name!r} is registered but its code could not be imported ({exc}).{hint}"
            ) from exc
        return getattr(module, attr)


_TASKS: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}


def register_task(
    name: str,
    target: Any,
    *,
    aliases: tuple[str, ...] | list[str] = (),
    default_model: str | None = None,
    description: str = "",
    extra: str | None = None,
    overwrite: bool = False,
) -> TaskSpec:
    """Register a pipeline class (or ``"module:Class"``) under ``name`` and ``aliases``.

    >>> import mm
    >>> from mm.base import Pipeline
    >>> class Echo(Pipeline):
    ...     task = "echo"
    ...     def _forward(self, batch, **kw):
    ...         return batch
    >>> spec = register_task("echo", Echo, aliases=["parrot"], overwrite=True)
    >>> mm.pipeline("parrot", model=None)("hi")
    'hi'
    """
    names = [name, *aliases]
    if not overwrite:
        taken = [n for n in names if _canonical(n) in _ALIASES]
        if taken:
            raise UnknownTaskError(
                f"task name(s) {choices_text(taken)} already registered; pass overwrite=True to replace"
            )
    spec = TaskSpec(name, target, tuple(aliases), default_model, description, extra)
    _TASKS[name] = spec
    for n in names:
        _ALIASES[_canonical(n)] = name
    return spec


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def tasks() -> list[TaskSpec]:
    """All registered tasks, sorted by name."""
    return [_TASKS[name] for name in sorted(_TASKS)]


def resolve_task(task: str) -> TaskSpec:
    """Look a task up by name or alias, or raise :class:`UnknownTaskError` listing the choices."""
    if not isinstance(task, str) or _canonical(task) not in _ALIASES:
        valid = sorted(_ALIASES)
        raise UnknownTaskError(f"unknown task {task!r}; valid tasks and aliases: {choices_text(valid)}")
    return _TASKS[_ALIASES[_canonical(task)]]


def pipeline(task: str, model: Any = None, *, device: str = "auto", dtype: str = "auto", **options: Any):
    """Build the pipeline for ``task``.

    ``model`` is a local checkpoint directory, an HF-cache or hub id, or ``None``
    for the task's default checkpoint. ``options`` are the pipeline's own
    settings; an option it does not know raises :class:`mm.errors.UnsupportedOptionError`.

    >>> import mm
    >>> mm.pipeline("nope")
    Traceback (most recent call last):
    ...
    mm.errors.UnknownTaskError: unknown task 'nope'; valid tasks and aliases: ...
    """
    spec = resolve_task(task)
    cls = spec.load_class()
    if model is None:
        model = spec.default_model
    return cls(model, device=device, dtype=dtype, task=spec.name, **options)


def _register_builtins() -> None:
    builtin = [
        ("chat", "mm.pipelines.chat:ChatPipeline", ["text-generation", "chat-completion"],
         "LiquidAI/LFM2-350M", "Chat / text generation with an LFM2 language model", None),
        ("vqa", "mm.pipelines.vqa:VQAPipeline", ["visual-question-answering", "image-text-to-text"],
         "LiquidAI/LFM2-VL-450M", "Visual question answering with LFM2-VL", "vision"),
        ("speech-to-speech", "mm.pipelines.speech:SpeechToSpeechPipeline", ["s2s", "audio-chat"],
         "LiquidAI/LFM2-Audio-1.5B", "Spoken conversation with LFM2-Audio (text + audio reply)", "audio"),
        ("asr", "mm.pipelines.speech:ASRPipeline", ["automatic-speech-recognition", "speech-to-text"],
         "LiquidAI/LFM2-Audio-1.5B", "Speech recognition with LFM2-Audio", "audio"),
        ("tts", "mm.pipelines.speech:TTSPipeline", ["text-to-speech", "text-to-audio"],
         "LiquidAI/LFM2-Audio-1.5B", "Speech synthesis with LFM2-Audio", "audio"),
        ("search", "mm.pipelines.search:SearchPipeline", ["retrieval", "multilingual-search"],
         None, "Multilingual search over an mm index (LFM2-ColBERT or a dense encoder)", "search"),
    ]
    for name, target, aliases, default_model, description, extra in builtin:
        register_task(name, target, aliases=aliases, default_model=default_model,
                      description=description, extra=extra, overwrite=True)


_register_builtins()
