"""`stablerep fit|validate|test`: LightningCLI with any method as model and any data module as data (class_path)."""

from __future__ import annotations

import warnings
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_warn

from stablerep_pl.callbacks.resume import ExactResume
from stablerep_pl.cli.errors import ConciseArgumentParser
from stablerep_pl.distributed.devices import emulated_bf16_message
from stablerep_pl.methods.base import BaseMethod


class RunConfigCallback(SaveConfigCallback):
    """Saves the resolved config beside the logs, and nowhere when the run has no logger (Lightning's
    callback would write `config.yaml` into the current directory, which nobody asked for)."""

    def setup(self, trainer, pl_module, stage: str) -> None:  # type: ignore[no-untyped-def]
        if trainer.logger is None:
            return
        super().setup(trainer, pl_module, stage)


class StableRepCLI(LightningCLI):
    """LightningCLI with any `BaseMethod` subclass as model and any LightningDataModule as data."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        with warnings.catch_warnings():  # subcommands pass their own args while sys.argv holds theirs
            warnings.filterwarnings(
                "ignore", message=".*args parameter is intended to run from within Python.*"
            )
            self._init(args, run)

    def _init(self, args: list[str] | None, run: bool) -> None:
        super().__init__(
            model_class=BaseMethod,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunConfigCallback,
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

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, and a warning when its precision is bf16 on a device that only emulates it
        (a config tuned on one machine, e.g. the quickstart's bf16 on an AVX512-BF16 CPU, met on another)."""
        trainer = super().instantiate_trainer(**kwargs)
        message = emulated_bf16_message(trainer.precision, trainer.strategy.root_device)
        if message:
            rank_zero_warn(message, category=UserWarning)
        return trainer
