"""`stablerep fit` with the memory queue and momentum encoder, 2 CPU processes (gloo), DDP and FSDP2.

3 steps of 8 captions × 4 views per rank (64 images per global step) into a queue of 96, so the queue
wraps on step 2. After every step, on every rank: the same queue, holding the gathered batches in
rank order (view-major within a rank), and the momentum encoder at m·θ_k + (1 − m)·θ_q of the
updated online weights (FSDP2: on sharded parameters, gathered here to compare). The loss's
cross-rank maths against one process is checked in tests/losses/test_queue_distributed.py; this is
the wiring in real runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
STEPS, VIEWS, QUEUE, M = 3, 4, 96, 0.99
ARGS = ["--config", str(ROOT / "configs/quickstart.yaml"), "--config", str(ROOT / "configs/stablerep/quickstart_queue.yaml"),
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--data.init_args.num_captions=64",
        "--data.init_args.batch_size=8", "--data.init_args.num_workers=0", f"--model.init_args.queue_size={QUEUE}",
        f"--model.init_args.momentum={M}", f"--trainer.max_steps={STEPS}", "--trainer.enable_checkpointing=false"]  # fmt: skip


def recorders(workdir: Path) -> Path:
    callbacks = [
        {"class_path": "stablerep_pl.callbacks.TorchThreads", "init_args": {"num_threads": 1}},
        {"class_path": "rank_recorder.RankRecorder", "init_args": {"out_dir": str(workdir / "records")}},
        {"class_path": "queue_recorder.QueueRecorder", "init_args": {"out_dir": str(workdir / "records")}},
    ]
    path = workdir / "recorders.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"logger": False, "callbacks": callbacks}}))
    return path


@pytest.fixture(scope="module", params=["ddp", "fully_shard"])
def run(request, tmp_path_factory, launch_fit, read_records) -> tuple[list[dict], list[list[dict]]]:
    workdir = tmp_path_factory.mktemp(f"queue_{request.param}")
    strategy = str(ROOT / "configs" / "trainer" / f"{request.param}.yaml")
    launch_fit([*ARGS, "--config", strategy, "--config", str(recorders(workdir))], workdir)
    steps = [torch.load(workdir / "records" / f"queue_rank{r}.pt", weights_only=False) for r in range(2)]
    return read_records(workdir), steps


@pytest.mark.slow
def test_every_rank_holds_the_same_queue_of_the_gathered_batches(run) -> None:
    records, states = run
    assert len(states[0]) == len(states[1]) == STEPS + 1
    for first, second in zip(*states):
        assert first.keys() == second.keys()
        for name in first:  # parameters, momentum copies, BatchNorm statistics and the queue
            assert torch.equal(first[name], second[name]), name
    rows: list[int] = []
    for step in range(STEPS):  # rank 0's images, then rank 1's, each view-major: row k in slot k mod 96
        rows += [c for record in records for c in record["caption_ids"][step].repeat(VIEWS).tolist()]
        expected = [-1] * QUEUE
        for k, caption in enumerate(rows):
            expected[k % QUEUE] = caption
        state = states[0][step + 1]
        assert state["loss.queue_labels"].tolist() == expected, f"after step {step}"
        assert int(state["loss.queue_filled"]) == min(len(rows), QUEUE)
        assert int(state["loss.queue_pointer"]) == len(rows) % QUEUE
    norms = states[0][-1]["loss.queue_features"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


@pytest.mark.slow
def test_momentum_encoder_follows_each_optimizer_step(run) -> None:
    _, states = run
    names = [
        n for n in states[0][0] if n.startswith("momentum_") and "running" not in n and "num_batches" not in n
    ]
    assert names and all(
        torch.equal(states[0][0][n], states[0][0][n.removeprefix("momentum_")]) for n in names
    )
    for step in range(1, STEPS + 1):
        before, after = states[0][step - 1], states[0][step]
        for name in names:
            expected = M * before[name] + (1 - M) * after[name.removeprefix("momentum_")]
            torch.testing.assert_close(after[name], expected, rtol=0, atol=1e-6, msg=f"{name}, step {step}")
        assert not torch.equal(after["head.mlp.0.weight"], before["head.mlp.0.weight"])
