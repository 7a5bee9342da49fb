"""Bad inputs never hang and never train on garbage: each gets a clear one-line error before training
starts, or a counted skip. One test per row of the README's "Bad inputs" table (the rows covered
elsewhere name their test in the README)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.cli import main
from stablerep_pl.data.shards import ShardDataModule
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.generation.render import render_shards

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--data.init_args.num_captions=64",
         "--data.init_args.batch_size=8", "--data.init_args.num_workers=0", "--trainer.callbacks=[]",
         "--trainer.logger=false", "--trainer.max_steps=2"]  # fmt: skip


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad_input_shards")
    caps = [Caption(caption_key(t), t) for t in procedural_captions(16, seed=1)]
    render_shards(
        ProceduralGenerator(size=16), caps, folder, images_per_caption=3, shard_size=8, progress=False
    )
    return folder


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture, cwd: Path, code: int) -> str:
    """Run `stablerep ARGV` in-process; return its error line (the first of stderr)."""
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
    finally:
        os.chdir(previous)
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if ": error: " in line]
    assert len(errors) == 1, err
    return errors[0]


def shard_args(urls: str, *extra: str) -> list[str]:
    return [*QUICK, "--config", str(ROOT / "configs/data/shards.yaml"), f"--data.init_args.urls={urls}",
            "--data.init_args.batch_size=4", *extra]  # fmt: skip


def test_urls_matching_no_file(shard_dir: Path, capsys, tmp_path: Path) -> None:
    line = one_line_error(shard_args(f"{shard_dir}/shard-{{000000..000009}}.tar"), capsys, tmp_path, 1)
    assert "8 of 10 shard URLs match no file" in line


def test_views_above_images_per_caption_from_shards(shard_dir: Path, capsys, tmp_path: Path) -> None:
    line = one_line_error(
        shard_args(f"{shard_dir}/shard-000000.tar", "--data.init_args.views=4"), capsys, tmp_path, 1
    )
    assert "views (4) <= images_per_caption (3)" in line


def test_views_above_images_per_caption_on_the_fly(capsys, tmp_path: Path) -> None:
    line = one_line_error([*QUICK, "--data.init_args.views=11"], capsys, tmp_path, 1)
    assert "views (11) <= images_per_caption (10)" in line


@pytest.mark.parametrize("content", ["", "   \n\t\n  \n"], ids=["empty", "blanks_only"])
def test_caption_file_without_captions(content: str, capsys, tmp_path: Path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text(content)
    argv = ["render", "--config", str(ROOT / "configs/render/procedural.yaml"), "--captions", str(captions),
            "--output", str(tmp_path / "out"), "--progress", "false"]  # fmt: skip
    assert "no captions to render" in one_line_error(argv, capsys, tmp_path, 1)


def test_blank_caption_list_on_the_fly(capsys, tmp_path: Path) -> None:
    line = one_line_error([*QUICK, "--data.init_args.captions=['  ', '']"], capsys, tmp_path, 1)
    assert "no captions to train on" in line


def test_fewer_captions_than_ranks(capsys, tmp_path: Path) -> None:
    line = one_line_error([*QUICK, "--data.init_args.num_captions=4"], capsys, tmp_path, 1)
    assert "4 distinct captions cannot fill one batch of 8 captions" in line


def test_fewer_shards_than_ranks_and_workers(shard_dir: Path) -> None:
    dm = ShardDataModule(
        str(shard_dir / "shard-000000.tar"), views=2, batch_size=2, resampled=False, num_workers=2
    )
    with pytest.raises(ValueError, match="cannot feed 1 ranks × 2 workers without resampling"):
        dm.setup()


def test_unknown_backbone(capsys, tmp_path: Path) -> None:
    line = one_line_error(
        [*QUICK, "--model.init_args.backbone.init_args.name=resnet_nope"], capsys, tmp_path, 1
    )
    assert "unknown timm model 'resnet_nope'" in line


def test_mistyped_yaml_key(capsys, tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("data:\n  init_args:\n    batch_sizee: 3\n")
    line = one_line_error([*QUICK, "--config", str(config)], capsys, tmp_path, 2)
    assert "Option 'batch_sizee' is not accepted" in line and "GeneratorDataModule" in line


def test_bad_class_path(capsys, tmp_path: Path) -> None:
    line = one_line_error(
        [*QUICK, "--model.init_args.loss=stablerep_pl.losses.NoSuchLoss"], capsys, tmp_path, 2
    )
    assert "NoSuchLoss" in line and "loss" in line


def test_missing_checkpoint_for_fit_export_and_probe(capsys, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.ckpt")
    assert "Checkpoint file not found" in one_line_error(
        [*QUICK, f"--ckpt_path={missing}"], capsys, tmp_path, 1
    )
    assert f"{missing} does not exist" in one_line_error(
        ["export", missing, "--out", "x.safetensors"], capsys, tmp_path, 1
    )
    probe = ["probe", "--config", str(ROOT / "configs/probe/quickstart.yaml"), "--ckpt", missing]
    assert f"{missing} does not exist" in one_line_error(probe, capsys, tmp_path, 1)


def test_sharded_checkpoint_folder_says_how_to_consolidate(capsys, tmp_path: Path) -> None:
    folder = tmp_path / "last.ckpt"
    folder.mkdir()
    (folder / ".metadata").write_bytes(b"")
    line = one_line_error(["export", str(folder), "--out", "x.safetensors"], capsys, tmp_path, 1)
    assert "python -m stablerep_pl.distributed.consolidate" in line


def test_unwritable_output_directory(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    line = one_line_error([*QUICK, f"--trainer.default_root_dir={blocker}/runs"], capsys, tmp_path, 1)
    assert "cannot write the run's outputs" in line and "is a file, not a directory" in line


def test_not_a_tar_counts_skips_then_fails(shard_dir: Path, tmp_path: Path) -> None:
    """A file that is not a tar at all among good shards is skipped and counted; only bad files fail."""
    garbage = tmp_path / "shard-000009.tar"
    garbage.write_bytes(os.urandom(4096))
    good = tmp_path / "shard-000000.tar"
    shutil.copy(shard_dir / "shard-000000.tar", good)
    dm = ShardDataModule([str(good), str(garbage)], views=2, batch_size=2, resampled=False, num_workers=0,
                         epoch_captions=8)  # fmt: skip
    dm.setup()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(dm.build_stream())
    assert len(batches) == 4 and sum(int(b["skipped"]) for b in batches) >= 1
    only_bad = ShardDataModule([str(garbage)], views=2, batch_size=2, resampled=True, num_workers=0,
                               epoch_captions=8, max_consecutive_skips=5)  # fmt: skip
    only_bad.setup()
    with (
        warnings.catch_warnings(),
        pytest.raises(ValueError, match="5 consecutive samples or shards were unusable"),
    ):
        warnings.simplefilter("ignore")
        next(iter(only_bad.build_stream()))


def test_changed_settings_on_render_resume(capsys, tmp_path: Path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(procedural_captions(8, seed=0)))
    argv = ["render", "--config", str(ROOT / "configs/render/procedural.yaml"), "--captions", str(captions),
            "--output", str(tmp_path / "out"), "--progress", "false", "--shard_size", "4"]  # fmt: skip
    main(argv)
    capsys.readouterr()
    line = one_line_error([*argv[:-1], "5"], capsys, tmp_path, 1)
    assert "rendered with different settings (shard_size)" in line


def test_console_errors_are_one_line_from_a_real_process(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "stablerep_pl.cli", *QUICK, "--data.init_args.views=11"],
                         capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert errors == ["stablerep fit: error: ValueError: need 1 <= views (11) <= images_per_caption (10)"], (
        out.stderr
    )
    assert "Traceback" not in out.stderr


def test_corrupt_images_are_counted_in_tensorboard_and_the_summary(
    shard_dir: Path, tmp_path: Path, capsys
) -> None:
    import io
    import tarfile

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from stablerep_pl.cli import StableRepCLI

    bad = tmp_path / "shard-000000.tar"
    with tarfile.open(shard_dir / "shard-000000.tar") as src, tarfile.open(bad, "w") as dst:
        members = src.getmembers()
        broken = {m.name.split(".")[0] for m in members[:1]} | {m.name.split(".")[0] for m in members[-1:]}
        for member in members:
            data = src.extractfile(member).read()
            if member.name.split(".")[0] in broken and member.name.endswith(".jpg"):
                data, member.size = b"garbage", 7
            dst.addfile(member, io.BytesIO(data))
    args = shard_args(str(bad), "--data.init_args.views=2", "--data.init_args.resampled=false",
                      "--data.init_args.batch_size=2", "--trainer.max_steps=3", "--trainer.log_every_n_steps=1",
                      f"--trainer.logger={{'class_path': 'lightning.pytorch.loggers.TensorBoardLogger', "
                      f"'init_args': {{'save_dir': '{tmp_path}'}}}}",
                      "--trainer.callbacks=[{'class_path': 'stablerep_pl.callbacks.RunSummary'}]",
                      f"--trainer.default_root_dir={tmp_path}")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = StableRepCLI(args=args[1:] if args[0] != "fit" else args)
    assert cli.model.skipped_samples == 2
    assert "skipped: 2 unusable samples" in capsys.readouterr().out
    (events,) = tmp_path.rglob("events.out.tfevents*")
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    assert accumulator.Scalars("data/skipped_samples")[-1].value == 2
