"""One-line errors for the command line: configuration mistakes and bad inputs, not tracebacks.

jsonargparse reports a mistyped key inside a `class_path` block as a dozen lines about Union
subtypes and NoneType, with the real cause in the middle; a bad input found while a run starts
(missing shards, an unwritable directory) surfaces as a 40-line traceback. Users need the cause and
the setting to change. `condense` pulls them out of jsonargparse's message; `main` in `cli.py`
prints known input errors as one line. `STABLEREP_VERBOSE_ERRORS=1` restores the full output.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from typing import NoReturn

from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser

VERBOSE_ENV = "STABLEREP_VERBOSE_ERRORS"
_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Given value( type)?:|"
    r"- Expected a <class 'NoneType'>)"
)


def verbose_errors() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def condense(message: str) -> str:
    """The parser key, the class concerned and the first real reason, on one line."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 1 or not any(_NOISE.match(line) for line in lines):
        return message.strip()
    key = re.match(r'Parser key "([^"]+)"', lines[0])
    where = key.group(1) if key else ""
    owner, reasons = "", []
    for line in lines[1:]:
        problem = re.match(r"- Problem with given class_path '([^']+)':?(.*)", line)
        if problem:
            owner = problem.group(1)
            if problem.group(2).strip():
                reasons.append(problem.group(2).strip())
            continue
        if not _NOISE.match(line):
            reasons.append(line.lstrip("- "))
    reason = reasons[0] if reasons else lines[0]
    text = f"{where}: {reason}" if where else reason
    return f"{text} ({owner})" if owner else text


class ConciseErrors:
    """For jsonargparse parsers: print `error: <one line>` and how to get more, instead of the full dump."""

    prog: str
    exit_on_error: bool

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if verbose_errors() or not self.exit_on_error:
            super().error(message, ex)  # type: ignore[misc]
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(
            f"{prog}: error: {condense(message)}\n"
            f"  ({prog} --help lists every option; {VERBOSE_ENV}=1 prints the full message)\n"
        )
        sys.exit(2)


class ConciseArgumentParser(ConciseErrors, LightningArgumentParser):
    """LightningCLI's parser (`fit`, `validate`, `test`) with one-line errors."""


class SubcommandParser(ConciseErrors, ArgumentParser):
    """The parser of `render`, `probe` and `export`: jsonargparse like `fit` (YAML `--config`,
    `--print_config`, `class_path` objects), with one-line errors and an example in `--help`."""

    def __init__(self, *args, example: str | None = None, **kwargs) -> None:
        if example is not None:  # the subcommand itself (jsonargparse also builds nested parsers)
            import argparse

            kwargs.update(
                epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter
            )
            kwargs.setdefault("env_prefix", "STABLEREP")
            kwargs.setdefault("default_env", False)
        super().__init__(*args, **kwargs)


# Errors that name a bad input or setting (raised before training, or by a data/NaN guard during it).
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
)


def _input_errors() -> tuple[type[BaseException], ...]:
    from stablerep_pl.callbacks.output_dirs import OutputDirectoryError
    from stablerep_pl.data.loader import DataStallError
    from stablerep_pl.methods.step_stats import NonFiniteLossError

    return (*INPUT_ERRORS, OutputDirectoryError, DataStallError, NonFiniteLossError)


@contextlib.contextmanager
def report_input_error(prog: str) -> Iterator[None]:
    """Print a bad input's error as `prog: error: Type: message` and exit 1, instead of a traceback."""
    try:
        yield
    except Exception as err:
        if verbose_errors() or not isinstance(err, _input_errors()):
            raise
        message = " ".join(condense(str(err)).split()) or type(err).__name__
        sys.stderr.write(
            f"{prog}: error: {type(err).__name__}: {message}\n  ({VERBOSE_ENV}=1 shows the traceback)\n"
        )
        sys.exit(1)
