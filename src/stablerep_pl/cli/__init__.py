"""The `stablerep` command: one subcommand per job, each a jsonargparse parser with YAML configs and `--help`."""

from __future__ import annotations

import os
import sys
from typing import Any

from stablerep_pl.cli.errors import report_input_error
from stablerep_pl.distributed.host_memory import keep_freed_host_memory

SUBCOMMANDS = {
    "fit": "train a method (LightningCLI; also validate, test)",
    "validate": "the training loss on held-out captions of a checkpoint",
    "test": "as validate, on the test loader",
    "render": "captions → generator → resumable webdataset shards",
    "probe": "the paper's offline evaluation protocol on a checkpoint",
    "export": "a checkpoint's backbone as timm-loadable safetensors",
    "benchmark": "input pipeline vs model step vs full step of a fit config: what bounds it",
    "replicate": "the paper's findings in miniature: equal-compute sweeps, seeds, table and figures",
}
OVERVIEW = (
    "usage: stablerep SUBCOMMAND [--help] [options]\n\n"
    + "\n".join(f"  {name:<10}{what}" for name, what in SUBCOMMANDS.items())
    + "\n\nexample:\n  stablerep fit --config configs/quickstart.yaml\n"
)


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: `stablerep SUBCOMMAND ...`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    keep_freed_host_memory()  # before any tensor: CPU steps reuse freed blocks instead of faulting in pages
    command = list(sys.argv[1:] if argv is None else argv)
    if not command or command[0] in ("-h", "--help"):
        print(OVERVIEW, end="")
        return
    with report_input_error(f"stablerep {command[0]}"):
        return _dispatch(command, from_sys_argv=argv is None)


def console() -> int:
    """The installed `stablerep` script: exit status 0 on success (errors raise or exit non-zero).

    The script runs `sys.exit(console())`; `main` returns a subcommand's results for callers in
    Python, which `sys.exit` would print to stderr and turn into exit status 1.
    """
    main()
    return 0


def _dispatch(argv: list[str], from_sys_argv: bool) -> Any:
    name, rest = argv[0], argv[1:]
    if name == "render":
        from stablerep_pl.cli.render import main as subcommand
    elif name == "probe":
        from stablerep_pl.cli.probe import main as subcommand
    elif name == "export":
        from stablerep_pl.cli.export import main as subcommand
    elif name == "benchmark":
        from stablerep_pl.cli.benchmark import main as subcommand
    elif name == "replicate":
        from stablerep_pl.cli.replicate import main as subcommand
    else:
        from stablerep_pl.cli.fit import StableRepCLI

        StableRepCLI(args=None if from_sys_argv else argv)  # None: LightningCLI reads sys.argv itself
        return
    return subcommand(rest)


def __getattr__(name: str):  # `from stablerep_pl.cli import StableRepCLI` without importing Lightning eagerly
    if name == "StableRepCLI":
        from stablerep_pl.cli.fit import StableRepCLI

        return StableRepCLI
    raise AttributeError(name)
