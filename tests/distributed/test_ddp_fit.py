"""`stablerep fit` on the quickstart config with configs/trainer/ddp.yaml in 2 CPU processes (gloo).

One run for the module (~20 s): 3 steps of 8 captions × 4 views per rank (64 images per global step),
the quickstart model and on-the-fly data, `optim.base_lr` so that the lr is scaled by the global
batch. The probe callbacks are left out (they have their own tests); `rank_recorder.RankRecorder`
records what the tests compare.

Same global batch for the single-process comparison: the images are random augmentations drawn in
each rank's process, so a second single-process *run* could not reproduce them. Instead each rank
records the batch it actually trained on, and one process recomputes the first step on the two
batches concatenated (rank 0's captions, then rank 1's: the gather's order) from the same initial
weights. That compares exactly what matters: the cross-rank gather, the synchronised BatchNorm and
DDP's gradient averaging, and it fails if any of them is missing (a rank-local BatchNorm changes the
loss, a gather without gradients changes the gradients).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from stablerep_pl.cli import StableRepCLI

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
DDP = str(ROOT / "configs" / "trainer" / "ddp.yaml")
# fp32, not the quickstart's bf16 autocast: the gradient test below bounds DDP's error by float32
# rounding against a float64 reference (bf16 + DDP runs in the non-finite, queue and FSDP2 tests)
TINY = ["--data.init_args.num_captions=64", "--data.init_args.batch_size=8", "--data.init_args.num_workers=0",
        "--trainer.precision=32-true"]  # fmt: skip
STEPS = 3


def assert_close_to_scale(got: torch.Tensor, expected: torch.Tensor, name: str, rel: float = 1e-4) -> None:
    """Equal up to float32 reduction order, measured against the tensor's largest entry (exact zeros
    such as biases before a BatchNorm carry ~1e-8 noise, which an elementwise rtol would reject)."""
    error = float((got - expected).abs().max())
    assert error <= rel * float(expected.abs().max()) + 1e-7, f"{name}: max error {error:.3g}"


@pytest.fixture(scope="module")
def scaled_lr(tmp_path_factory) -> list[str]:
    """`optim.base_lr` instead of the quickstart's absolute lr (a null on the command line is a string)."""
    path = tmp_path_factory.mktemp("scaled_lr") / "scaled_lr.yaml"
    path.write_text(yaml.safe_dump({"model": {"init_args": {"optim": {"lr": None, "base_lr": 1e-3}}}}))
    return ["--config", str(path)]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, launch_fit, overrides, read_records, scaled_lr) -> tuple[Path, str, list[dict]]:
    workdir = tmp_path_factory.mktemp("ddp_fit")
    args = ["--config", QUICKSTART, *scaled_lr, "--config", DDP, "--config", str(overrides(workdir)),
            "--trainer.accelerator=cpu", "--trainer.devices=2", f"--trainer.max_steps={STEPS}", *TINY]  # fmt: skip
    stdout = launch_fit(args, workdir)
    return workdir, stdout, read_records(workdir)


@pytest.mark.slow
def test_two_process_fit_completes_with_identical_parameters(ddp_run) -> None:
    _, _, records = ddp_run
    for rank, record in enumerate(records):
        assert (record["rank"], record["world_size"], record["strategy"]) == (rank, 2, "DDPStrategy")
        assert record["global_step"] == STEPS and len(record["local_loss"]) == STEPS
        assert record["batchnorm_types"] == ["CPUSyncBatchNorm"]  # sync_batchnorm took effect on CPU
    first, second = records[0]["final_state"], records[1]["final_state"]
    assert first.keys() == second.keys()
    for name in first:  # parameters and BatchNorm running statistics, bit for bit
        assert torch.equal(first[name], second[name]), name
    moved = [n for n in first if not torch.equal(first[n], records[0]["initial_state"][n])]
    assert any(n.startswith("backbone.") for n in moved) and any(n.startswith("head.") for n in moved)


@pytest.mark.slow
def test_first_step_loss_and_gradients_equal_one_process(
    ddp_run, first_step_in_one_process, scaled_lr
) -> None:
    _, _, records = ddp_run
    loss, grads = first_step_in_one_process(records, ["--config", QUICKSTART, *scaled_lr, *TINY])
    local = torch.tensor([r["local_loss"][0] for r in records])
    assert not torch.allclose(local[0], local[1])  # the ranks' anchors really differ
    torch.testing.assert_close(local.mean(), loss, rtol=1e-5, atol=1e-5)
    for record in records:  # the logged loss is the global batch's, on every rank
        torch.testing.assert_close(torch.tensor(record["logged_loss"][0]), loss, rtol=1e-5, atol=1e-5)
    # DDP's averaged gradient equals the gradient of the global loss: measured against the exact
    # (float64) one-process gradient, DDP's float32 error must be of the size of one float32 process's
    # own rounding error (a missing gather gradient or a rank-local BatchNorm is orders larger).
    _, exact = first_step_in_one_process(records, ["--config", QUICKSTART, *scaled_lr, *TINY], torch.float64)
    for record in records:
        assert record["first_grads"].keys() == grads.keys()
        for name, grad in grads.items():
            reference = exact[name]
            rounding = float((grad.double() - reference).abs().max())
            error = float((record["first_grads"][name].double() - reference).abs().max())
            assert error <= 8 * rounding + 1e-6 * float(reference.abs().max()), (name, error, rounding)


@pytest.mark.slow
def test_caption_ids_are_disjoint_across_ranks(ddp_run) -> None:
    _, _, records = ddp_run
    steps = [[r["caption_ids"][s].tolist() for r in records] for s in range(STEPS)]
    for per_rank in steps:
        assert not set(per_rank[0]) & set(per_rank[1])
    seen = [i for per_rank in steps for ids in per_rank for i in ids]
    assert len(seen) == len(set(seen)) == STEPS * 2 * 8  # one epoch: no caption twice
    assert all(0 <= i < 64 for i in seen)


@pytest.mark.slow
def test_ranks_draw_their_own_augmentations(ddp_run) -> None:
    """With num_workers 0 the augmentations are drawn in the training process, whose RNG every rank
    seeds alike; BaseMethod.setup decorrelates them (identical states here before that fix)."""
    _, _, records = ddp_run
    for step in range(STEPS):
        assert not torch.equal(records[0]["rng_after_batch"][step], records[1]["rng_after_batch"][step])


@pytest.mark.slow
def test_global_batch_and_scaled_lr_printed_once_and_logged(ddp_run) -> None:
    workdir, stdout, records = ddp_run
    lines = [line for line in stdout.splitlines() if line.startswith("global batch")]
    assert len(lines) == 1, stdout  # rank 0 only
    assert re.match(r"global batch 64 images/step = 32 per rank × 2 ranks × 1 accumulated · "
                    r"peak lr 0\.00025 = base_lr 0\.001 × 64 / 256", lines[0]), lines[0]  # fmt: skip
    for record in records:
        assert record["global_batch_images"] == 64
        assert record["initial_lr"] == pytest.approx(1e-3 * 64 / 256)
    (hparams,) = (workdir / "runs").rglob("hparams.yaml")
    logged = yaml.safe_load(hparams.read_text())
    assert logged["global_batch_images"] == 64 and logged["peak_lr"] == pytest.approx(2.5e-4)


class _Resumed:
    """Records where a resumed run starts, how many steps it runs in this process and on which captions."""

    def __init__(self) -> None:
        self.start_step: int | None = None
        self.start_state: dict[str, torch.Tensor] = {}
        self.steps_run = 0
        self.caption_ids: list[list[int]] = []


def epoch_order(epoch: int, rank: int, world: int, seed: int = 0, num_captions: int = 64) -> list[int]:
    """Caption ids of one rank's epoch, written out independently of the package: one permutation of the
    captions per epoch, seeded with seed + epoch (torch's DistributedSampler rule), rank r takes r::world."""
    permutation = torch.randperm(num_captions, generator=torch.Generator().manual_seed(seed + epoch))
    return permutation[rank::world].tolist()


@pytest.mark.slow
def test_ddp_checkpoint_resumes_in_one_process(ddp_run, scaled_lr, tmp_path: Path) -> None:
    import lightning as L

    workdir, _, records = ddp_run
    ckpt = workdir / "ckpt" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["global_step"] == STEPS
    for name, value in records[0]["final_state"].items():  # the checkpoint holds the trained weights
        torch.testing.assert_close(saved["state_dict"][name], value, rtol=0, atol=0)
    # The reference order is the one the 2-rank run really trained on (quickstart data seed 0) ...
    for rank, record in enumerate(records):
        trained = [i for step in range(STEPS) for i in record["caption_ids"][step].tolist()]
        assert trained == epoch_order(0, rank, 2)[: STEPS * 8]

    seen = _Resumed()

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            seen.start_step = trainer.global_step
            seen.start_state = {k: v.clone() for k, v in pl_module.state_dict().items()}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.steps_run += 1
            seen.caption_ids.append(batch["caption_ids"].tolist())

    args = ["--config", QUICKSTART, *scaled_lr, *TINY, "--trainer.accelerator=cpu",
            "--trainer.devices=1", f"--trainer.max_steps={STEPS + 2}", "--trainer.logger=false",
            "--trainer.callbacks=[]", f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    cli = StableRepCLI(args=args, run=False)
    cli.trainer.callbacks.append(Probe())
    # ... 2 ranks' positions cannot continue on 1 rank: the epoch restarts from the 1-rank order's start.
    restart = r"data-loader states of 2 ranks but this run has 1: epoch \d+ restarts from its first batch"
    with pytest.warns(UserWarning, match=restart):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt))
    assert seen.start_step == STEPS and seen.steps_run == 2 and cli.trainer.global_step == STEPS + 2
    for name, value in records[0]["final_state"].items():
        torch.testing.assert_close(seen.start_state[name], value, rtol=0, atol=0)
    # Lightning saved the run stopped by max_steps as "epoch 0 done" (checkpoint epoch 1) and resumes in
    # epoch 1, so the data restarts with epoch 1's order (the warning names the loader's epoch, 0).
    assert saved["epoch"] == 1
    one_rank = epoch_order(1, rank=0, world=1)
    assert seen.caption_ids == [one_rank[:8], one_rank[8:16]]
