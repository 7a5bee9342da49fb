"""`stablerep export OUR.ckpt --format authors`: our runs in the authors' layout, for their `main_linear.py`.

Their loading lines are re-typed in `authors_reference.main_linear_load` (strip `visual.`, build
`vit_{size}_patch16_224`, `load_state_dict(strict=False)`, assert only the classifier is missing).
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import authors_reference as ref

from stablerep_pl.cli import main
from stablerep_pl.interop import load_authors_checkpoint
from stablerep_pl.methods import StableRep, StableRepPlus
from stablerep_pl.methods.optim import OptimConfig
from stablerep_pl.models import TextTransformer, TimmBackbone


class Captions(Dataset):
    """Two captions × two views at `size` px, with CLIP-like tokens."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        tokens = torch.zeros(77, dtype=torch.long)
        tokens[:4] = torch.tensor([49406, 320 + i, 736, 49407])
        return {"images": torch.randn(2, 3, self.size, self.size, generator=g), "caption_ids": torch.tensor(i),
                "tokens": tokens}  # fmt: skip


def trained_checkpoint(model: StableRep, tmp_path: Path, size: int = 224) -> Path:
    """One optimiser step of `model`, saved by Lightning (our checkpoint format, timm record included)."""
    trainer = L.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, DataLoader(Captions(size), batch_size=2))
    path = tmp_path / "ours.ckpt"
    trainer.save_checkpoint(path)
    return path


def vit_s(**kwargs) -> TimmBackbone:
    return TimmBackbone("vit_small_patch16_224", **kwargs)


@pytest.mark.parametrize("plus", [False, True], ids=["stablerep", "stablerep_plus"])
def test_their_main_linear_loads_our_export(
    tmp_path: Path, plus: bool, capsys: pytest.CaptureFixture
) -> None:
    torch.manual_seed(0)
    common = dict(head_hidden_dim=64, head_out_dim=16, temperature=0.2, optim=OptimConfig(lr=1e-3))
    if plus:
        text = TextTransformer(width=64, layers=2, heads=8, activation="quick_gelu")
        model = StableRepPlus(vit_s(), text, embed_dim=32, image_text_weight=0.5, **common)
    else:
        model = StableRep(vit_s(), **common)
    ckpt = trained_checkpoint(model, tmp_path)
    out = tmp_path / "epoch_last.pth"
    main(["export", str(ckpt), "--format", "authors", "--out", str(out)])
    assert "args.model='small'" in capsys.readouterr().out
    # Their probe's loading code accepts it, and its features are our backbone's.
    theirs = ref.main_linear_load(out, "small").eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        expected = model.backbone.eval()(x)
        got = theirs.forward_head(theirs.forward_features(x), pre_logits=True)
    assert ((got - expected).norm() / expected.norm()).item() <= 1e-5
    # Their file, read back: the same module, every weight, and the loss settings as their args.
    saved = torch.load(out, weights_only=False)
    assert set(saved) == {"model", "epoch", "args"}
    assert saved["args"].model == "small" and saved["args"].add_language == plus
    assert saved["args"].ssl_temp == 0.2 and saved["args"].ssl_w2 == (0.5 if plus else 1.0)
    back = load_authors_checkpoint(out)
    assert type(back) is type(model)
    mine, theirs_state = model.state_dict(), back.state_dict()
    assert sorted(mine) == sorted(theirs_state)
    assert all(torch.equal(mine[k], theirs_state[k]) for k in mine)
    if plus:
        assert back.image_text_weight == 0.5 and back.image_loss_weight == 1.0


@pytest.mark.parametrize(
    ("backbone", "error"),
    [
        (
            lambda: TimmBackbone("resnet10t"),
            "holds only vit_base_patch16_224, vit_large_patch16_224, vit_small",
        ),
        (lambda: vit_s(img_size=32), "built with {'img_size': 32}"),
    ],
    ids=["resnet", "vit-at-32px"],
)
def test_other_backbones_are_a_clear_error(
    tmp_path: Path, backbone, error: str, capsys: pytest.CaptureFixture
) -> None:
    model = StableRep(backbone(), head_hidden_dim=16, head_out_dim=8, optim=OptimConfig(lr=1e-3))
    ckpt = trained_checkpoint(model, tmp_path, size=32)
    with pytest.raises(SystemExit):
        main(["export", str(ckpt), "--format", "authors", "--out", str(tmp_path / "x.pth")])
    message = capsys.readouterr().err.splitlines()[0]
    assert error in message and not (tmp_path / "x.pth").exists()
