"""Exact resume, proven by killing real `stablerep fit` processes (scripts/resume_check.py).

Each case runs the quickstart model three times: uninterrupted; SIGKILLed (whole process group)
right after a mid-epoch checkpoint; resumed from that `last.ckpt`. The final weights must be
bit-identical (`torch.equal`) and every step must have trained on the same caption ids and pixels
with the same loss. The cases are the ones a requeue meets: on-the-fly data with a worker, the
reuse buffer, shards resampled and in disjoint passes with two workers, 2-process DDP, and a
checkpoint written on the last batch of an epoch (where a restored loader would otherwise start
from an exhausted iterator and skip a whole epoch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.generation.render import render_shards

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from resume_check import resume_check  # noqa: E402

QUICKSTART = [
    "--config",
    str(ROOT / "configs/quickstart.yaml"),
    "--trainer.callbacks=[]",
    "--trainer.logger=false",
]
ON_THE_FLY = ["--data.init_args.num_captions=32", "--data.init_args.batch_size=8"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("resume_shards")
    caps = [Caption(caption_key(t), t) for t in procedural_captions(96, seed=3)]
    render_shards(
        ProceduralGenerator(size=32), caps, folder, images_per_caption=6, shard_size=12, progress=False
    )
    return str(folder / "shard-{000000..000007}.tar")


def from_shards(urls: str, resampled: bool) -> list[str]:
    return ["--config", str(ROOT / "configs/data/shards.yaml"), f"--data.init_args.urls={urls}",
            "--data.init_args.batch_size=8", "--data.init_args.shuffle_buffer=20", "--data.init_args.num_workers=2",
            f"--data.init_args.resampled={str(resampled).lower()}"]  # fmt: skip


REUSE = ["--data.init_args.num_workers=2", "--data.init_args.reuse=2", "--data.init_args.buffer_size=8"]
DDP = [
    "--data.init_args.num_workers=0",
    "--data.init_args.num_captions=64",
    "--config",
    str(ROOT / "configs/trainer/ddp.yaml"),
    "--trainer.accelerator=cpu",
    "--trainer.devices=2",
]
CASES = {  # (arguments, steps, kill after the checkpoint of this step)
    # epoch = 4 steps: the checkpoint of step 4 is the last batch of epoch 0, read by a worker
    "epoch_end_checkpoint_with_worker": ([*ON_THE_FLY, "--data.init_args.num_workers=1"], 6, 4),
    "reuse_buffer": ([*ON_THE_FLY, *REUSE], 7, 3),  # mid-epoch, two workers
    "ddp_two_processes": ([*ON_THE_FLY, *DDP], 6, 3),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_killed_and_resumed_run_is_bit_identical(case: str, tmp_path: Path) -> None:
    args, steps, kill_after = CASES[case]
    assert resume_check([*QUICKSTART, *args], tmp_path, steps, kill_after, timeout=300) == []


@pytest.mark.slow
@pytest.mark.parametrize("resampled", [True, False])
def test_killed_and_resumed_shard_run_is_bit_identical(shards: str, resampled: bool, tmp_path: Path) -> None:
    # 12 batches per epoch (96 captions / batch 8), killed mid-epoch with samples of several shards buffered
    assert resume_check([*QUICKSTART, *from_shards(shards, resampled)], tmp_path, 11, 7, timeout=300) == []
