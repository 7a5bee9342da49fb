"""`init_weights`: a run starts from another file's weights (ours, the authors', an export), not a resume.

Checked: every tensor arrives; partial loads are refused with the names unless asked for; the
optimiser, schedule and step count start fresh; the loading happens once per process, before the
strategy wraps the model; and a `--ckpt_path` resume overrides it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))
import authors_reference as ref
from tiny_fit import Items, Recorder, snapshot, tiny_model, trainer

import stablerep_pl.methods.base as base
from stablerep_pl.cli import StableRepCLI
from stablerep_pl.methods import StableRep, StableRepPlus
from stablerep_pl.methods.init_weights import InitWeightsError, load_init_weights
from stablerep_pl.methods.optim import OptimConfig
from stablerep_pl.models import TextTransformer, TimmBackbone
from stablerep_pl.models.authors_format import authors_to_ours

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def authors_files(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """The authors' StableRep (False) and StableRep+ (True) checkpoints, written once for the module."""
    files = {}
    for language in (False, True):
        torch.manual_seed(1)
        model = ref.stablerep_mm("small", 32) if language else ref.stablerep("small", 32)
        files[language] = tmp_path_factory.mktemp("authors") / "epoch_last.pth"
        ref.save_training_checkpoint(model, files[language], ref.training_args(add_language=language))
    return files


def ours_like_theirs(**kwargs) -> StableRep:
    torch.manual_seed(2)
    return StableRep(
        TimmBackbone("vit_small_patch16_224", img_size=32), head_hidden_dim=64, head_out_dim=16, **kwargs
    )


def test_the_authors_checkpoint_fills_every_weight(
    authors_files: dict[bool, Path], caplog: pytest.LogCaptureFixture
) -> None:
    path = authors_files[False]
    model = ours_like_theirs()
    with caplog.at_level(logging.INFO):
        report = load_init_weights(model, path)
    expected = authors_to_ours(torch.load(path, weights_only=False)["model"])
    state = model.state_dict()
    assert len(report.loaded) == len(state) == 166 and not report.missing and not report.unexpected
    assert all(torch.equal(state[k], expected[k]) for k in state)
    assert "init_weights: loaded 166 of the model's 166 tensors" in caplog.text
    assert "the authors' StableRep checkpoint, vit_small_patch16_224" in caplog.text


def test_partial_loads_are_refused_unless_asked_for(authors_files: dict[bool, Path]) -> None:
    path = authors_files[True]  # StableRep+ weights into a StableRep: text tower unused
    model = ours_like_theirs()
    before = snapshot(model)
    with pytest.raises(InitWeightsError) as info:
        load_init_weights(model, path)
    message = str(info.value)
    # 2 text blocks × 12 tensors, 2 embeddings, final norm, 2 projections, logit scale
    assert "0 missing (none), 31 unexpected" in message
    assert "text_encoder.transformer.* (24)" in message and "logit_scale" in message
    assert "init_weights_strict: false" in message and "\n" not in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing changed
    report = load_init_weights(model, path, strict=False)
    assert len(report.loaded) == 166 and len(report.unexpected) == 31


def test_other_shapes_are_always_an_error(authors_files: dict[bool, Path]) -> None:
    path = authors_files[False]
    model = StableRep(TimmBackbone("vit_small_patch16_224", img_size=32), head_hidden_dim=32, head_out_dim=16)
    with pytest.raises(InitWeightsError, match=r"head\.mlp\.0\.weight \(64, 384\) \(model \(32, 384\)\)"):
        load_init_weights(model, path, strict=False)


def test_a_backbone_export_needs_strict_false(tmp_path: Path) -> None:
    source = ours_like_theirs()
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.backbone.model.state_dict().items()}, str(path))
    model = ours_like_theirs()
    torch.manual_seed(3)
    model.head = type(model.head)(384, 64, 16)
    head_before = snapshot(model.head)
    with pytest.raises(InitWeightsError, match=r"16 missing \(head\.mlp\.\* \(16\)\), 0 unexpected"):
        load_init_weights(model, path)
    load_init_weights(model, path, strict=False)
    assert all(
        torch.equal(v, source.backbone.state_dict()[k]) for k, v in model.backbone.state_dict().items()
    )
    assert all(torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())


def test_a_gelu_text_tower_is_warned_about(authors_files: dict[bool, Path]) -> None:
    path = authors_files[True]
    torch.manual_seed(0)
    text = TextTransformer(width=64, layers=2, heads=8)  # gelu: not what their weights were trained with
    model = StableRepPlus(
        TimmBackbone("vit_small_patch16_224", img_size=32), text, embed_dim=32, head_hidden_dim=64, head_out_dim=16
    )  # fmt: skip
    with pytest.warns(UserWarning, match="quick_gelu"):
        load_init_weights(model, path)


def test_a_run_starts_fresh_from_the_file_and_a_resume_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run A trains 3 steps. Run B starts from A's weights: step 0, the warmup's first lr, A's weights
    at its first step. Run C resumes B with the same init_weights: B's weights and step count win."""
    optim = OptimConfig(lr=0.1, warmup_steps=2)
    loader = DataLoader(Items(16), batch_size=4)
    run_a = tiny_model(optim=optim)
    first = trainer([], max_steps=3)
    first.fit(run_a, loader)
    source = tmp_path / "a.ckpt"
    first.save_checkpoint(source)

    calls = []
    real = base.load_init_weights
    monkeypatch.setattr(base, "load_init_weights", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    recorder = Recorder()
    run_b = tiny_model(optim=optim, init_weights=str(source))
    assert not all(torch.equal(v, run_a.state_dict()[k]) for k, v in run_b.state_dict().items())
    second = trainer([recorder], max_steps=2)
    second.fit(run_b, loader)
    assert all(torch.equal(v, run_a.state_dict()[k]) for k, v in recorder.weights[0].items())
    assert recorder.lrs == pytest.approx([0.05, 0.1])  # a fresh warmup: (step + 1) / 2 × peak
    assert second.global_step == 2 and second.optimizers[0].state[next(run_b.parameters())]["step"] == 2
    second.validate(run_b, loader)  # fit then validate in one process: still loaded once
    assert calls == [str(source)]
    resume = tmp_path / "b.ckpt"
    second.save_checkpoint(resume)

    recorder = Recorder()
    run_c = tiny_model(optim=optim, init_weights=str(source))
    trainer([recorder], max_steps=4).fit(run_c, loader, ckpt_path=resume)
    assert all(torch.equal(v, run_b.state_dict()[k]) for k, v in recorder.weights[2].items())
    assert sorted(recorder.weights) == [2, 3, 4]


def test_the_cli_takes_init_weights(tmp_path: Path) -> None:
    """`stablerep fit --config … --model.init_args.init_weights PATH` (here one of our own checkpoints)."""
    args = [
        "--config", str(ROOT / "configs/quickstart.yaml"), "--data.init_args.num_captions=32",
        "--data.init_args.batch_size=4", "--data.init_args.num_workers=0", "--trainer.max_steps=1",
        "--trainer.logger=false", "--trainer.callbacks=[]", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    first = StableRepCLI(args=["fit", *args])
    source = tmp_path / "first.ckpt"
    first.trainer.save_checkpoint(source)
    second = StableRepCLI(args=[*args, f"--model.init_args.init_weights={source}"], run=False)
    assert second.model.init_weights == str(source) and second.model.init_weights_strict is True
    second.trainer.fit(second.model, datamodule=second.datamodule)
    assert second.model.init_weights_report.source == "Lightning checkpoint"
    assert len(second.model.init_weights_report.loaded) == len(first.model.state_dict())
