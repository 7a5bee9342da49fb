"""Every place the package reads a checkpoint refuses a file that would run code, with one line saying why.

The malicious files are pickles whose `__reduce__` would call `os.system("touch MARKER")`: if any
reader unpickled them the marker would appear.
"""

from __future__ import annotations

import fractions
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import authors_reference as ref

from stablerep_pl.cli import main
from stablerep_pl.interop import export_authors_checkpoint, load_authors_checkpoint
from stablerep_pl.interop.checkpoints import load_backbone, read_backbone
from stablerep_pl.interop.export import export_backbone
from stablerep_pl.methods import StableRep
from stablerep_pl.methods.init_weights import load_init_weights
from stablerep_pl.models import TimmBackbone
from stablerep_pl.models.safe_load import TRUST_ENV, UnsafeCheckpointError, load_checkpoint


class RunsShell:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """`(file, marker)`: a torch zip checkpoint or a bare pickle, authors'-shaped, with the payload inside."""
    marker = tmp_path / "MARKER"
    payload = {"model": {"visual.cls_token": torch.zeros(1, 1, 4)}, "args": RunsShell(marker), "epoch": 0}
    path = tmp_path / f"epoch_last_{kind}.pth"
    if kind == "zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path, marker


READERS: dict[str, Callable[[Path, Path], object]] = {
    "load_checkpoint": lambda p, tmp: load_checkpoint(p),
    "read_backbone (probe, export)": lambda p, tmp: read_backbone(p),
    "load_backbone (probe)": lambda p, tmp: load_backbone(p),
    "export_backbone": lambda p, tmp: export_backbone(p, tmp / "out.safetensors"),
    "export_authors_checkpoint": lambda p, tmp: export_authors_checkpoint(p, tmp / "out.pth"),
    "load_authors_checkpoint": lambda p, tmp: load_authors_checkpoint(p),
    "init_weights": lambda p, tmp: load_init_weights(StableRep(TimmBackbone("resnet10t"), 8, 4), p),
}


@pytest.mark.parametrize("kind", ["zip", "pickle"])
@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_refuses_a_malicious_file(tmp_path: Path, reader: str, kind: str) -> None:
    path, marker = malicious(tmp_path, kind)
    with pytest.raises(UnsafeCheckpointError) as info:
        READERS[reader](path, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"refusing to load {path}: unpickling it would call ")
    assert f"rerun with {TRUST_ENV}=1" in message
    if kind == "zip":
        assert "'posix.system'" in message or "'nt.system'" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "{path}", "--out", "{tmp}/b.safetensors"],
        ["export", "{path}", "--format", "authors", "--out", "{tmp}/b.pth"],
        [
            "probe",
            "--ckpt",
            "{path}",
            "--data",
            "configs/eval/procedural_quickstart.yaml",
            "--out",
            "{tmp}/p",
        ],
    ],
    ids=["export", "export-authors", "probe"],
)
def test_the_command_line_prints_one_line_and_runs_nothing(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    path, marker = malicious(tmp_path, "zip")
    with pytest.raises(SystemExit) as info:
        main([a.format(path=path, tmp=tmp_path) for a in argv])
    assert info.value.code == 1
    error = capsys.readouterr().err.splitlines()
    assert error[0].startswith("stablerep ") and "UnsafeCheckpointError: refusing to load" in error[0]
    assert TRUST_ENV in error[0] and len(error) == 2  # the message, then the hint for a traceback
    assert not marker.exists()


def test_the_authors_files_need_exactly_the_allow_list(tmp_path: Path) -> None:
    """Their checkpoint (real AdamW state, GradScaler state, argparse args) needs `argparse.Namespace`
    beyond what weights_only allows, and nothing else; ours need nothing."""
    path = tmp_path / "epoch_last.pth"
    ref.save_training_checkpoint(ref.stablerep("small", 32), path, ref.training_args())
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == ["argparse.Namespace"]
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    loaded = load_checkpoint(path)
    assert loaded["args"].model == "small" and loaded["args"].down_res == [64, 128]
    assert set(loaded) == {"model", "optimizer", "epoch", "scaler", "args"}


def test_trusting_a_file_is_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"value": fractions.Fraction(1, 3)}, path)  # harmless, but outside the allow-list
    with pytest.raises(UnsafeCheckpointError, match=r"'fractions\.Fraction'"):
        load_checkpoint(path)
    monkeypatch.setenv(TRUST_ENV, "1")
    assert load_checkpoint(path)["value"] == fractions.Fraction(1, 3)
    # The malicious files are live: trusted, one does run its payload (so the tests above can fail).
    evil, marker = malicious(tmp_path, "zip")
    load_checkpoint(evil)
    assert marker.exists()
