"""Command-line flags generated from labkit's one schema, and the parser every labkit command uses.

`add_config_arguments` gives a parser one flag per `TrainConfig` field (name, type, default and help from the
field), so a new field needs no edit here; `config_from_args` and `parse_config` turn the flags given back into a
config; `format_command` prints a command for a terminal. A bad command line is one line (`labkit: error: ...`,
exit 2) with the closest name when one is close.
"""

from __future__ import annotations

import argparse
import re
import shlex
import types
import typing
from collections.abc import Sequence
from typing import NoReturn

from ..core.errors import did_you_mean
from ..training.config import RECIPE_NOTES, RECIPES, TrainConfig, config_fields, field_types, flag_name

__all__ = ["Parser", "add_config_arguments", "config_from_args", "parse_config", "format_command"]


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (`labkit: error: ...`, exit 2) like every other user error."""

    def error(self, message: str) -> NoReturn:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:  # an unknown subcommand or choice: add the closest one
            hint = did_you_mean(choice[1], re.findall(r"'([^']*)'", choice[2])).strip()
            message = f"{message}; {hint}"
        self.exit(2, f"labkit: error: {message.rstrip('; ')} (see {self.prog} --help)\n")

    def unrecognized(self, extra: Sequence[str]) -> NoReturn:
        """Unknown flags, reported by the subcommand's own parser with the closest flag it has."""
        flags = [o for a in self._actions for o in a.option_strings]
        hints = [did_you_mean(w.split("=")[0], flags).strip() for w in extra if w.startswith("-")]
        self.error(f"unrecognized arguments: {' '.join(extra)}" + "".join(f"; {h}" for h in hints if h))


def add_config_arguments(parser: argparse.ArgumentParser, schema: type = TrainConfig,
                         exclude: tuple[str, ...] = ()) -> None:
    """One flag per field of `schema`: name, type, default and help from the field, so a new field needs no edit
    here. Defaults stay out of the namespace (argparse.SUPPRESS): `config_from_args` sees which flags were given."""
    types = field_types(schema)
    parser.add_argument("--recipe", choices=list(RECIPES), default=argparse.SUPPRESS, help=_RECIPE_HELP)
    for f in config_fields(schema):
        if f.name not in exclude:
            parser.add_argument(flag_name(f.name), dest=f.name, default=argparse.SUPPRESS, help=_help(f),
                                **_parse_as(types[f.name]))


_RECIPE_HELP = "named defaults that the other flags override. " + ". ".join(
    f"{name}{' (the default)' if not RECIPES[name] else ''}: {note}" for name, note in RECIPE_NOTES.items())


def _help(f) -> str:
    choices = f.metadata.get("choices")
    allowed = f"; one of: {', '.join(choices())}" if choices else ""
    default = f.default if not isinstance(f.default, tuple) else " ".join(map(str, f.default))
    return f"{f.metadata.get('help', '')}{allowed} (default: {'none' if default is None else default})".replace(
        "%", "%%")


def _parse_as(tp) -> dict:
    """argparse keywords for a field type: int, float, str, bool (--x / --no-x), tuple[float, ...], X | None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is types.UnionType and type(None) in typing.get_args(tp):  # X | None: "none" -> None
        inner = _parse_as(args[0])["type"]
        return {"type": lambda text: None if text.lower() == "none" else inner(text), "metavar": "VALUE|none"}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(tp) is tuple:
        return {"type": args[0], "nargs": "+", "metavar": args[0].__name__.upper()}
    return {"type": tp}


def config_from_args(args: argparse.Namespace, schema: type = TrainConfig, **override) -> TrainConfig:
    """The config of the flags given on the command line, the schema's defaults for the rest."""
    given = dict(RECIPES[args.recipe]) if hasattr(args, "recipe") else {}  # the flags given override the recipe
    given.update({f.name: getattr(args, f.name) for f in config_fields(schema) if hasattr(args, f.name)})
    given.update(override)
    if isinstance(given.get("milestones"), list):
        given["milestones"] = tuple(given["milestones"])
    return schema(**given)


def parse_config(argv: Sequence[str], schema: type = TrainConfig) -> TrainConfig:
    """`train`'s config flags -> the config (for `TrainConfig.to_argv` round trips and scripts)."""
    parser = Parser(prog="labkit train")
    add_config_arguments(parser, schema)
    return config_from_args(parser.parse_args(list(argv)), schema)


def format_command(program: str, argv: Sequence[str]) -> str:
    """A shell command, one `--flag value...` per continued line: what a notebook prints for a terminal."""
    lines: list[str] = []
    for word in argv:
        if word.startswith("--") or not lines:
            lines.append(shlex.quote(word))
        else:
            lines[-1] += " " + shlex.quote(word)
    return " \\\n    ".join([program, *lines])
