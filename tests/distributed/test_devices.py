"""Device naming and the bf16 check that warns when a config's bf16 would be emulated."""

import platform
import warnings
from pathlib import Path

import pytest
import torch

from stablerep_pl.cli import StableRepCLI
from stablerep_pl.distributed.devices import (
    bf16_is_native,
    emulated_bf16_message,
    fast_precision,
    resolve_device,
)

QUICKSTART = str(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml")


def cpu_bf16(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "native"), [(False, False, False), (True, False, True), (False, True, True)]
)
def test_cpu_bf16_is_native_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native) -> None:
    cpu_bf16(monkeypatch, avx512_bf16, amx)
    assert bf16_is_native(torch.device("cpu")) is native


def test_what_cannot_be_checked_counts_as_native(monkeypatch) -> None:
    cpu_bf16(monkeypatch, False, False)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")  # ARM has its own bf16 instructions
    assert bf16_is_native(torch.device("cpu"))
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert not bf16_is_native(torch.device("cpu"))
    # a GPU is not queried before CUDA is initialised (forking launchers refuse an initialised parent)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: pytest.fail("CUDA was queried"))
    assert bf16_is_native(torch.device("cuda"))


def test_fast_precision_follows_the_hardware(monkeypatch) -> None:
    cpu_bf16(monkeypatch, True, False)
    assert fast_precision("cpu") == "bf16-mixed"
    cpu_bf16(monkeypatch, False, False)
    assert fast_precision("cpu") == "32-true"


def test_message_only_for_bf16_without_hardware(monkeypatch) -> None:
    cpu = torch.device("cpu")
    cpu_bf16(monkeypatch, False, False)
    assert "pass --trainer.precision 32-true" in emulated_bf16_message("bf16-mixed", cpu)
    assert "bf16 is emulated" in emulated_bf16_message("bf16-true", cpu)
    assert emulated_bf16_message("32-true", cpu) is None
    cpu_bf16(monkeypatch, True, False)
    assert emulated_bf16_message("bf16-mixed", cpu) is None


@pytest.mark.parametrize("native", [False, True])
def test_cli_warns_when_the_configs_bf16_would_be_emulated(monkeypatch, tmp_path, native) -> None:
    cpu_bf16(monkeypatch, native, False)
    args = ["--config", QUICKSTART, "--trainer.precision=bf16-mixed", "--trainer.callbacks=[]", "--trainer.accelerator=cpu",
            f"--trainer.logger.init_args.save_dir={tmp_path}"]  # fmt: skip
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        StableRepCLI(args=args, run=False)
    emulated = [w for w in record if "bf16 is emulated" in str(w.message)]
    assert len(emulated) == (0 if native else 1)
