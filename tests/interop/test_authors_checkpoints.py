"""The authors' StableRep / StableRep+ checkpoints: evaluate, export and load them into our modules.

Every check runs against `authors_reference.py`, an independent re-implementation of their model,
losses and checkpoint files (ViT-S/16 at 32 px, a 2-layer text tower, small MLPs: seconds on a CPU).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import authors_reference as ref

from stablerep_pl.cli import main
from stablerep_pl.interop import load_authors_checkpoint
from stablerep_pl.interop.checkpoints import load_backbone
from stablerep_pl.methods import StableRep, StableRepPlus
from stablerep_pl.models.authors_format import authors_to_ours

B, M, IMG = 4, 3, 32  # captions, images per caption, pixels


def their_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(img_cat [B, 3m, H, W], label [B], text [B, 77])` as their training loop feeds it."""
    g = torch.Generator().manual_seed(seed)
    img_cat = torch.randn(B, 3 * M, IMG, IMG, generator=g)
    text = torch.zeros(B, 77, dtype=torch.long)
    text[:, 0] = 49406
    text[:, 1:6] = torch.randint(1, 49000, (B, 5), generator=g)
    text[torch.arange(B), torch.tensor([6, 4, 5, 3])] = 49407  # end-of-text at different positions
    return img_cat, torch.arange(B), text


def our_batch(img_cat: torch.Tensor, label: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same batch in our layout: views are the channel triples, `images [B, m, 3, H, W]`."""
    return {"images": img_cat.view(B, M, 3, IMG, IMG), "caption_ids": label, "tokens": text}


def authors_model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "stablerep":
        return ref.stablerep("small", IMG)
    return ref.stablerep_mm("small", IMG, vl_projection=kind)


SETTINGS = {  # their args for each kind: loss settings away from the defaults, so that mapping them matters
    "stablerep": dict(ssl_temp=0.2),
    "linear": dict(add_language=True, vl_projection="linear", ssl_temp=0.1, ssl_w1=0.5, ssl_w2=2.0),
    "mlp": dict(add_language=True, vl_projection="mlp", ssl_temp=0.15, ssl_w1=1.0, ssl_w2=1.0),
}


def their_loss(model: torch.nn.Module, kind: str, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    s = SETTINGS[kind]
    if kind == "stablerep":
        return ref.multipos_con_loss(model(*batch[:2]), s["ssl_temp"])
    return ref.multipos_con_loss_mm(model(*batch), s["ssl_temp"], s["ssl_w1"], s["ssl_w2"])


@pytest.fixture(params=["stablerep", "linear", "mlp"])
def authors_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, torch.nn.Module, Path]:
    kind = request.param
    model = authors_model(kind)
    path = tmp_path / "epoch_last.pth"
    ref.save_training_checkpoint(model, path, ref.training_args(**SETTINGS[kind]))
    return kind, model, path


def test_reference_gives_the_golden_values_of_their_code() -> None:
    """The reference losses reproduce numbers measured by running the authors' losses (spec §6)."""
    feats = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]])
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    assert ref.multipos_con_loss({"feats": feats, "labels": labels})["loss"].item() == pytest.approx(
        0.753330647945404, abs=1e-6
    )
    out = {
        "image_feats": feats, "image_labels": labels, "text_labels": torch.tensor([[0], [1], [2]]),
        "image_emb": torch.tensor([[1.0, 2, 0], [0, 1, 3], [2, 0, 1], [1, 0, 0], [0, 2, 1], [1, 1, 1]]),
        "text_emb": torch.tensor([[1.0, 1, 0], [0, 1, 0], [0, 0, 1]]), "logit_scale": torch.tensor(1 / 0.07),
    }  # fmt: skip
    mm = ref.multipos_con_loss_mm(out)
    assert mm["loss"].item() == pytest.approx(4.219742774963379, abs=1e-6)
    assert mm["img_txt_loss"].item() == pytest.approx(3.466412305831909, abs=1e-6)


def test_reference_has_their_key_layout() -> None:
    """Full-size key counts of their models (spec: StableRep-B 166, StableRep+-B linear 317, mlp 347)."""
    with torch.device("meta"):
        counts = [
            len(ref.stablerep("base", 224, 4096, 256).state_dict()),
            len(ref.stablerep_mm("base", 224, 4096, 256, "linear", 512, 12, 512).state_dict()),
            len(ref.stablerep_mm("base", 224, 4096, 256, "mlp", 512, 12, 512).state_dict()),
        ]
    assert counts == [166, 317, 347]


def test_loaded_module_holds_every_weight_and_gives_their_loss(
    authors_file: tuple[str, torch.nn.Module, Path],
) -> None:
    kind, theirs, path = authors_file
    ours = load_authors_checkpoint(path)
    assert type(ours) is (StableRep if kind == "stablerep" else StableRepPlus)
    # Every tensor of their file is in our module, bit for bit, and nothing else is.
    expected = authors_to_ours(torch.load(path, weights_only=False)["model"])
    state = ours.state_dict()
    assert sorted(state) == sorted(expected)
    assert all(torch.equal(state[k], expected[k]) for k in state)
    # Same batch, training mode (per-view batch statistics): same losses and gradients.
    batch = their_batch()
    theirs.train()
    ours.train()
    reference = their_loss(theirs, kind, batch)
    losses = ours.compute_losses(our_batch(*batch))
    torch.testing.assert_close(losses["loss"], reference["loss"], rtol=1e-5, atol=0)
    if kind != "stablerep":
        torch.testing.assert_close(losses["image_loss"], reference["image_loss"], rtol=1e-5, atol=0)
        torch.testing.assert_close(losses["image_text_loss"], reference["img_txt_loss"], rtol=1e-5, atol=0)
    reference["loss"].backward()
    losses["loss"].backward()
    theirs_grads = authors_to_ours({k: p.grad for k, p in theirs.named_parameters()})
    # float32 rounding only: per tensor, relative to its norm, with a floor relative to the whole
    # gradient (a tensor whose true gradient nearly cancels, e.g. ln_final.bias ~1e-6, keeps ~1e-6 of
    # rounding noise whose size depends on the thread count).
    floor = 1e-5 * torch.stack([g.norm() for g in theirs_grads.values() if g is not None]).norm().item()
    for name, param in ours.named_parameters():
        expected_grad = theirs_grads[name]
        error = (param.grad - expected_grad).norm().item()
        assert error <= 1e-4 * expected_grad.norm().item() + floor, (name, error, expected_grad.norm().item())


def test_export_of_their_checkpoint_gives_their_features(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`stablerep export epoch_last.pth --out backbone.safetensors`: timm loads their `model.visual`."""
    theirs = authors_model("linear")
    path = tmp_path / "epoch_last.pth"
    ref.save_training_checkpoint(theirs, path, ref.training_args(**SETTINGS["linear"]))
    out = tmp_path / "backbone.safetensors"
    main(["export", str(path), "--out", str(out)])
    stdout = capsys.readouterr().out
    assert "vit_small_patch16_224" in stdout and "img_size=32" in stdout
    assert json.loads(out.with_name(out.name + ".json").read_text())["kwargs"] == {"img_size": 32}
    loaded = timm.create_model(
        "vit_small_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)), num_classes=0, img_size=32
    ).eval()  # fmt: skip
    x = torch.randn(5, 3, IMG, IMG)
    with torch.no_grad():
        expected = theirs.visual.eval()(x)
        got = loaded(x)
        probed = load_backbone(path)(x)  # what `stablerep probe --ckpt epoch_last.pth` encodes
    assert ((got - expected).norm() / expected.norm()).item() <= 1e-5
    assert ((probed - expected).norm() / expected.norm()).item() <= 1e-5


def test_architecture_mismatch_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "epoch_last.pth"
    ref.save_training_checkpoint(authors_model("stablerep"), path, ref.training_args(model="base"))
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(path), "--out", str(tmp_path / "b.safetensors")])
    assert exit_info.value.code == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert "args.model='base' means vit_base_patch16_224 (width 768, 12 blocks)" in first
    assert "width 384" in first
    with pytest.raises(ValueError, match="means vit_base_patch16_224"):
        load_authors_checkpoint(path)


def test_probe_runs_on_their_checkpoint(tmp_path: Path) -> None:
    """`stablerep probe --ckpt epoch_last.pth` runs the offline protocol on it directly."""
    from stablerep_pl.cli.probe import main as probe_main

    path = tmp_path / "epoch_last.pth"
    ref.save_training_checkpoint(authors_model("stablerep"), path, ref.training_args())
    report = probe_main([
        "--ckpt", str(path), "--out", str(tmp_path / "probe"),
        "--data.class_path=stablerep_pl.evaluation.eval_sets.ProceduralEvalSet",
        "--data.init_args.image_size=32", "--data.init_args.render_size=32",
        "--data.init_args.train_per_class=6", "--data.init_args.test_per_class=3",
        "--protocol.epochs=1", "--protocol.cache_features=true", "--protocol.num_workers=0",
        "--protocol.few_shot_episodes=0", "--protocol.online_estimator=false", "--device=cpu",
    ])  # fmt: skip
    linear = report["results"]["trained"]["linear"]
    assert report["checkpoint"] == str(path) and 0.0 <= linear["top1"] <= 1.0
    assert (tmp_path / "probe" / "results.json").is_file()
