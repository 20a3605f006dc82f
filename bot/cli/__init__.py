"""The `fluxcord` command (and `python -m bot`): the bot's entry point.

Each subcommand is a module here with `NAME`, `HELP`, `add_arguments` and `execute`. This
package is the one part of `bot/` that may import `discord` and `cogs`: it starts the client.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from types import ModuleType

from bot.cli import backup, copy_to, doctor, migrate, run
from bot.cli.common import DEFAULT_COMMAND, configure_logging, point_discord_at
from bot.errors import SettingsError, StartupError
from bot.version import __version__

# The order `fluxcord --help` lists them in.
COMMANDS: tuple[ModuleType, ...] = (run, migrate, doctor, backup, copy_to)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fluxcord",
        description="Fluxcord: a Discord bot for FLUX.2 image generation and editing. "
        "Settings come from the environment or a .env file (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"fluxcord {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `fluxcord` alone runs the bot, as `python -m bot` always has
        args = parser.parse_args([DEFAULT_COMMAND, *(argv if argv is not None else sys.argv[1:])])
    module: ModuleType = args.module
    try:
        settings = module.load(args)
    except SettingsError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    point_discord_at(settings)
    try:
        return int(asyncio.run(module.execute(settings, args)))
    except KeyboardInterrupt:
        return 0
    except StartupError as exc:  # a subcommand's failure, worded for the admin: one line
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        line = module.explain(exc) if hasattr(module, "explain") else None
        if line is None:
            raise
        text, code = line
        print(text, file=sys.stderr)
        return int(code)
