"""The ``mm`` command line (typer + rich).

Each capability adds its commands from its own module in this package; the
modules keep heavy imports (torch, transformers, faiss, gradio) inside the
command functions so ``mm --help`` answers fast.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from mm.errors import MMError

app = typer.Typer(
    name="mm",
    help="On-device multimodal pipelines on LiquidAI's LFM2 family: chat, VQA, speech, search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: command modules, each registering its commands on ``app`` when imported
COMMAND_MODULES = ["core", "vqa", "audio", "search", "serve"]


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"mm.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mm.cli.{name}":
                raise


#: ``mm --debug ...`` (anywhere before ``--``) shows tracebacks instead of one-line errors
DEBUG_FLAG = "--debug"
#: exit code of a usage error (bad argument, option or input), as click uses
USAGE_EXIT = 2
#: exit code of an unexpected failure (a bug, or the operating system refusing)
FAILURE_EXIT = 1


def _split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """Remove ``--debug`` from the arguments (before any ``--``).

    >>> _split_debug(["search", "--debug", "q", "--", "--debug"])
    (['search', 'q', '--', '--debug'], True)
    >>> _split_debug(["tasks"])
    (['tasks'], False)
    """
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != DEBUG_FLAG]
    return head + argv[end:], len(head) != end


def _click_exceptions() -> tuple[type[BaseException], ...]:
    """The ClickException classes in use: typer's bundled copy, and click itself when loaded."""
    from typer._click import exceptions as bundled

    classes: list[type[BaseException]] = [bundled.ClickException]
    click = sys.modules.get("click")  # only when something imported it: importing it here would slow `mm --help`
    if click is not None:
        classes.append(click.ClickException)
    return tuple(classes)


def _error_line(message: str, hint: str = "") -> None:
    from rich.console import Console
    from rich.text import Text

    first = " ".join(str(message).split()) or "(no message)"
    first = first.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates from argv stay printable
    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error: ", "bold red"), first, (hint, "dim")))


def _usage_hint(exc: BaseException) -> str:
    ctx = getattr(exc, "ctx", None)
    return f" (see '{ctx.command_path} --help')" if ctx is not None else ""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mm`` script.

    Usage errors and every :class:`MMError` print one line on stderr and exit with code 2;
    an unexpected exception prints one line and exits with 1. ``--debug`` re-raises instead
    (full traceback).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    _load_commands()
    click_errors = _click_exceptions()
    try:
        app(args=args, standalone_mode=False, prog_name="mm")
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # a command run without arguments prints its help
            sys.exit(USAGE_EXIT)
        if isinstance(exc, click_errors):
            _error_line(exc.format_message(), _usage_hint(exc))
            sys.exit(getattr(exc, "exit_code", USAGE_EXIT) or USAGE_EXIT)
        if isinstance(exc, MMError):
            _error_line(str(exc))
            sys.exit(USAGE_EXIT)
        if isinstance(exc, OSError):  # the system refused (disk full, permission): not a bug of mm
            _error_line(f"{exc}")
            sys.exit(FAILURE_EXIT)
        _error_line(f"unexpected {type(exc).__name__}: {exc}", " (rerun with --debug for the traceback)")
        sys.exit(FAILURE_EXIT)
