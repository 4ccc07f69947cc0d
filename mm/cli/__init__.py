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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mm`` script: MMErrors become one red line and exit code 2, never a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _load_commands()
    try:
        app(args=argv, standalone_mode=False)
    except MMError as exc:
        from rich.console import Console
        from rich.text import Text

        Console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(exc)))
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
