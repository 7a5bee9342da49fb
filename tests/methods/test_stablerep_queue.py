"""StableRepQueue: momentum encoder (formula, when it moves), what is enqueued, eval, resume.

The loss itself is checked against float64 references in tests/losses/test_queue*.py; here the
wiring: keys come from the momentum copies, the copies move by θ_k ← m·θ_k + (1 − m)·θ_q after
each optimizer step only (not per accumulated batch, not on a dropped non-finite step), validation
leaves the queue alone, and a run resumed from a checkpoint continues bit for bit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from stablerep_pl.losses import MultiPosConLoss
from stablerep_pl.methods import StableRep, StableRepQueue
from stablerep_pl.methods.optim import OptimConfig, build_adamw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_fit import Items, Recorder, TinyBackbone, trainer

OPTIM = OptimConfig(lr=0.05, warmup_steps=0)
M = 0.9


def tiny(queue_size: int = 12, momentum: float | None = M, **kwargs) -> StableRepQueue:
    torch.manual_seed(0)
    return StableRepQueue(TinyBackbone(), head_hidden_dim=8, head_out_dim=4, head_layers=2,
                          queue_size=queue_size, momentum=momentum, optim=OPTIM, **kwargs)  # fmt: skip


def batch(n: int = 4, m: int = 2) -> dict[str, torch.Tensor]:
    return {"images": torch.randn(n, m, 3, 4, 4), "caption_ids": torch.arange(n) * 10}


def momentum_names(model: StableRepQueue) -> list[tuple[str, str]]:
    """(momentum parameter, online parameter) names, paired."""
    names = [n for n, _ in model.named_parameters(remove_duplicate=False) if n.startswith("momentum_")]
    return [(n, n.removeprefix("momentum_")) for n in names]


def test_momentum_copies_start_equal_frozen_and_outside_the_optimizer() -> None:
    model = tiny()
    state = model.state_dict()
    pairs = momentum_names(model)
    assert len(pairs) == len(list(model.backbone.parameters())) + len(list(model.head.parameters()))
    assert all(torch.equal(state[k], state[q]) for k, q in pairs)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("momentum_"))
    optimised = {id(p) for g in build_adamw(model, OPTIM, 0.1).param_groups for p in g["params"]}
    assert optimised == {id(p) for p in [*model.backbone.parameters(), *model.head.parameters()]}
    assert tiny(momentum=None).momentum_backbone is None and not momentum_names(tiny(momentum=None))


def test_momentum_update_by_hand() -> None:
    model = tiny()
    key, online = model.momentum_head.mlp[0].weight, model.head.mlp[0].weight
    with torch.no_grad():
        key[0, 0], online[0, 0] = 2.0, -1.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.momentum_update()
    assert key[0, 0].item() == pytest.approx(0.9 * 2.0 + 0.1 * -1.0)  # 1.7
    after = model.state_dict()
    for k, q in momentum_names(model):
        torch.testing.assert_close(after[k], M * before[k] + (1 - M) * before[q], rtol=0, atol=1e-7)
        assert torch.equal(after[q], before[q])  # the online network does not move


def test_keys_from_the_momentum_encoder_are_enqueued() -> None:
    model = tiny().train()
    with torch.no_grad():  # a momentum encoder different from the online one
        for p in model.momentum_head.parameters():
            p.add_(0.5 * torch.randn_like(p))
    data = batch()
    model.compute_losses(data)
    keys = model.momentum_keys(data["images"])  # BatchNorm in train mode: the same batch statistics
    projections = model.embed(data["images"])["projections"].detach()
    stored, ids = model.loss.queued()
    torch.testing.assert_close(stored, F.normalize(keys, dim=1))
    assert not torch.allclose(stored, F.normalize(projections, dim=1), atol=1e-3)
    assert ids.tolist() == data["caption_ids"].repeat(2).tolist()  # view-major, as the loss's labels


def test_without_momentum_the_detached_projections_are_enqueued() -> None:
    with pytest.warns(UserWarning, match="momentum=None"):  # measured not to learn: users are told
        model = tiny(momentum=None).train()
    data = batch()
    loss = model.compute_losses(data)["loss"]
    projections = model.embed(data["images"])["projections"].detach()
    stored, _ = model.loss.queued()
    torch.testing.assert_close(stored, F.normalize(projections, dim=1))
    assert not stored.requires_grad and loss.requires_grad


def test_validation_neither_reads_nor_writes_the_queue() -> None:
    model = tiny().train()
    model.compute_losses(batch())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    data = batch()
    loss = model.compute_losses(data)["loss"]
    expected = MultiPosConLoss(0.1)(model.embed(data["images"])["projections"], data["caption_ids"].repeat(2))
    assert torch.equal(loss, expected)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def check_momentum_recurrence(weights: dict[int, dict], model: StableRepQueue, steps: int) -> None:
    """After optimizer step s: θ_k(s) = m·θ_k(s−1) + (1 − m)·θ_q(s), θ_q(s) the updated online weights."""
    for step in range(1, steps + 1):
        previous, now = weights[step - 1], weights[step]
        for k, q in momentum_names(model):
            expected = M * previous[k] + (1 - M) * now[q]
            torch.testing.assert_close(now[k], expected, rtol=0, atol=1e-6, msg=f"{k} after step {step}")
        assert not torch.equal(now["head.mlp.0.weight"], previous["head.mlp.0.weight"])


def test_fit_moves_the_momentum_encoder_after_each_optimizer_step() -> None:
    recorder, model = Recorder(), tiny(queue_size=20)
    trainer([recorder], max_steps=3).fit(model, train_dataloaders=DataLoader(Items(40), batch_size=4))
    check_momentum_recurrence(recorder.weights, model, 3)
    assert int(model.loss.queue_filled) == 20 and int(model.loss.queue_pointer) == 3 * 8 % 20


def test_with_accumulation_the_momentum_moves_once_per_optimizer_step() -> None:
    recorder, model = Recorder(), tiny(queue_size=40)
    run = trainer([recorder], max_steps=2, accumulate_grad_batches=2)
    run.fit(model, train_dataloaders=DataLoader(Items(40), batch_size=4))
    check_momentum_recurrence(recorder.weights, model, 2)  # m applied twice, not four times
    assert int(model.loss.queue_filled) == 4 * 8  # but every batch was enqueued


class NaNImage(Items):
    """Item 13 (4th batch of 4) is a NaN image: NaN projections and keys, a non-finite loss."""

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(i)
        return item | {"images": torch.full_like(item["images"], float("nan"))} if i == 13 else item


def test_a_skipped_nonfinite_step_leaves_queue_and_momentum_encoder_unchanged() -> None:
    recorder, model = Recorder(), tiny(queue_size=64, nonfinite_loss="skip")
    trainer([recorder], max_steps=5).fit(model, train_dataloaders=DataLoader(NaNImage(40), batch_size=4))
    assert model.skipped_nonfinite_steps == 1
    before, after = recorder.weights[3], recorder.weights[4]
    assert all(torch.equal(after[k], before[k]) for k in before), "the dropped step changed the state"
    assert int(model.loss.queue_filled) == 4 * 8 and torch.isfinite(model.loss.queue_features).all()


class Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, *args) -> None:
        self.values.append(outputs["loss"].detach().clone())


class StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


@pytest.mark.parametrize("momentum", [M, None])
def test_resumed_run_continues_bit_for_bit(tmp_path: Path, momentum: float | None) -> None:
    """4 steps per epoch into a queue of 12 (it wraps): 2 epochs straight vs 1 epoch, checkpoint, resume."""
    straight, model = Losses(), tiny(momentum=momentum)
    trainer([straight], max_epochs=2).fit(model, train_dataloaders=DataLoader(Items(16), batch_size=4))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    first = Losses()
    # max_epochs=2 as above (it sizes the lr schedule), stopped after the first epoch's checkpoint.
    trainer([first, checkpoint, StopAfterFirstEpoch()], max_epochs=2, enable_checkpointing=True).fit(
        tiny(momentum=momentum), train_dataloaders=DataLoader(Items(16), batch_size=4)
    )
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    assert int(saved["loss.queue_filled"]) == 12 and int(saved["loss.queue_pointer"]) == 4 * 8 % 12
    resumed, again = Losses(), tiny(momentum=momentum)
    trainer([resumed], max_epochs=2).fit(
        again, train_dataloaders=DataLoader(Items(16), batch_size=4), ckpt_path=tmp_path / "last.ckpt"
    )
    assert len(resumed.values) == 4
    assert all(torch.equal(a, b) for a, b in zip(first.values + resumed.values, straight.values, strict=True))
    final, expected = again.state_dict(), model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in expected.items())


def test_init_weights_start_the_momentum_encoder_and_an_empty_queue(tmp_path: Path) -> None:
    """A start from a plain StableRep's weights (which have no momentum copies or queue, hence not
    strict): the momentum encoder starts from the loaded weights, not from the random init."""
    torch.manual_seed(3)
    plain = StableRep(TinyBackbone(), head_hidden_dim=8, head_out_dim=4, head_layers=2)
    torch.save({"state_dict": plain.state_dict()}, tmp_path / "plain.ckpt")
    model = tiny(init_weights=str(tmp_path / "plain.ckpt"), init_weights_strict=False)
    model.loss.enqueue(torch.ones(3, 4), torch.arange(3))
    model.configure_model()
    state, loaded = model.state_dict(), plain.state_dict()
    for name, value in loaded.items():
        assert torch.equal(state[name], value) and torch.equal(state[f"momentum_{name}"], value), name
    assert int(model.loss.queue_filled) == 0 and model.loss.queue_labels.eq(-1).all()


def test_a_loss_argument_is_refused() -> None:
    with pytest.raises(ValueError, match="builds its own MultiPosQueueLoss"):
        tiny(loss=MultiPosConLoss())


def test_bad_momentum_fails_early() -> None:
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="momentum must be None or a number in"):
            tiny(momentum=bad)


@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_cli_run_is_bit_identical(tmp_path: Path) -> None:
    """`stablerep fit` with queue + momentum, SIGKILLed after the checkpoint of step 3 (written every
    step, mid-epoch, the queue already wrapped) and resumed: every step and the final state identical.
    A momentum update after the checkpoint callbacks (`on_train_batch_end`) would fail here."""
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "scripts"))
    from resume_check import resume_check

    args = ["--config", str(root / "configs/quickstart.yaml"), "--config", str(root / "configs/stablerep/quickstart_queue.yaml"),
            "--trainer.callbacks=[]", "--trainer.logger=false", "--data.init_args.num_captions=32",
            "--data.init_args.batch_size=8", "--data.init_args.num_workers=0", "--model.init_args.queue_size=80"]  # fmt: skip
    assert resume_check(args, tmp_path, steps=6, kill_after=3, timeout=300) == []
