"""`stablerep` command line: LightningCLI for fit/validate/test; models and data chosen by class_path."""

from __future__ import annotations

import os
import sys

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from stablerep_pl.callbacks.resume import ExactResume
from stablerep_pl.cli_errors import ConciseArgumentParser, report_input_error
from stablerep_pl.methods.base import BaseMethod


class StableRepCLI(LightningCLI):
    """LightningCLI with any `BaseMethod` subclass as model and any LightningDataModule as data."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=BaseMethod,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"env_prefix": "STABLEREP", "default_env": False},
            args=args,
            run=run,
            parser_class=ConciseArgumentParser,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Every run gets `ExactResume` (per-rank RNG states, atomic checkpoints, output checks);
        its options are `--exact_resume.*`."""
        parser.add_lightning_class_args(ExactResume, "exact_resume")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: `stablerep fit|validate|test` (LightningCLI), `render`, `probe` and `export`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = list(sys.argv[1:] if argv is None else argv)
    with report_input_error(f"stablerep {command[0]}" if command else "stablerep"):
        _dispatch(command, from_sys_argv=argv is None)


def _dispatch(argv: list[str], from_sys_argv: bool) -> None:
    if argv and argv[0] == "render":
        from stablerep_pl.render_cli import main as render_main

        render_main(argv[1:])
        return
    if argv and argv[0] == "probe":
        from stablerep_pl.probe_cli import main as probe_main

        probe_main(argv[1:])
        return
    if argv and argv[0] == "export":
        from stablerep_pl.export import main as export_main

        export_main(argv[1:])
        return
    StableRepCLI(args=None if from_sys_argv else argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
