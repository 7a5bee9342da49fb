"""Writes the paper's recipe configs from one template (run after editing; the YAML files are committed)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "configs"

TRAINER = """# {title}
# Paper recipe (StableRep, Tian et al. 2023): ViT-B/16 from scratch, 1376 captions x 6 images = 8256
# images per step on 32 GPUs (4 nodes x 8), AdamW (0.9, 0.98), wd 0.1, lr = 2e-4 x global/256 x 0.5
# (= base_lr 1e-4 per 256 images), {warmup} warmup epochs then cosine, bf16. Shards from `stablerep render`.
#   stablerep fit --config {path} --trainer.num_nodes 4
seed_everything: 0
trainer:
  accelerator: gpu
  devices: 8
  num_nodes: 4
  strategy: ddp
  sync_batchnorm: true
  precision: bf16-mixed
  max_epochs: {epochs}
  log_every_n_steps: 50
  num_sanity_val_steps: 0
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args:
      save_dir: runs
      name: {name}
  callbacks:
    - class_path: lightning.pytorch.callbacks.LearningRateMonitor
      init_args:
        logging_interval: step
    - class_path: stablerep_pl.callbacks.ImageThroughputMonitor
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        every_n_train_steps: 2000
        save_last: true
    - class_path: stablerep_pl.callbacks.RunSummary
"""

BACKBONE = """    backbone:
      class_path: stablerep_pl.models.TimmBackbone
      init_args:
        name: vit_base_patch16_224
        img_size: 224
        patch_size: 16
        drop_path_rate: 0.0
"""

OPTIM = """    optim:
      lr: null
      base_lr: 1.0e-4
      lr_reference_batch: 256
      weight_decay: 0.1
      betas: [0.9, 0.98]
      warmup_epochs: {warmup}
"""

DATA = """data:
  class_path: stablerep_pl.data.shards.ShardDataModule
  init_args:
    urls: shards/{dataset}_sd15/shard-{{000000..{last}}}.tar
    views: {views}
    batch_size: 43
    num_workers: 10
    resampled: true
    distinct_views: {distinct}
    text_tokens: {tokens}
    augmentation:
      image_size: 224
      min_scale: 0.08
"""

STABLEREP = """model:
  class_path: stablerep_pl.methods.StableRep
  init_args:
{backbone}    head_hidden_dim: 4096
    head_out_dim: 256
    head_layers: 3
    temperature: 0.1
{optim}"""

PLUS = """model:
  class_path: stablerep_pl.methods.StableRepPlus
  init_args:
{backbone}    text_encoder:
      class_path: stablerep_pl.models.TextTransformer
      init_args:
        width: 512
        layers: 12
        heads: 8
        context_length: 77
        activation: quick_gelu
    embed_dim: 512
    image_text_weight: {it_weight}
    image_loss_weight: {img_weight}
    head_hidden_dim: 4096
    head_out_dim: 256
    temperature: 0.1
{optim}"""

SHARDS = {"cc12m": "001023", "redcaps": "001023"}  # edit to your shard count


def write(path: str, title: str, model: str, epochs: int, dataset: str, *, views: int = 6,
          distinct: bool = True, tokens: str = "null", warmup: float = 0.5) -> None:  # fmt: skip
    name = Path(path).stem
    text = TRAINER.format(title=title, path=f"configs/{path}", warmup=warmup, epochs=epochs, name=name)
    text += model.format(backbone=BACKBONE, optim=OPTIM.format(warmup=warmup), it_weight=1.0, img_weight=1.0)
    text += DATA.format(dataset=dataset, last=SHARDS[dataset], views=views, distinct=str(distinct).lower(),
                        tokens=tokens)  # fmt: skip
    (ROOT / path).write_text(text)


for tag, epochs in [("1x", 15), ("2x", 31), ("3x", 46)]:
    write(f"stablerep/vitb16_cc12m_{tag}.yaml", f"StableRep ViT-B/16, CC12M captions, {tag} ({epochs} epochs)",
          STABLEREP, epochs, "cc12m")  # fmt: skip
for tag, epochs in [("1x", 13), ("3x", 40)]:
    write(f"stablerep/vitb16_redcaps_{tag}.yaml", f"StableRep ViT-B/16, RedCaps captions, {tag} ({epochs} epochs)",
          STABLEREP, epochs, "redcaps")  # fmt: skip
write("stablerep_plus/vitb16_cc12m_1x.yaml", "StableRep+ ViT-B/16, CC12M captions, 1x (15 epochs)", PLUS, 15,
      "cc12m", tokens="77")  # fmt: skip
write("baselines/simclr_vitb16_cc12m.yaml", "SimCLR baseline: one synthetic image per caption, two augmented views",
      STABLEREP, 15, "cc12m", views=2, distinct=False)  # fmt: skip
clip = PLUS.replace("image_text_weight: {it_weight}", "image_text_weight: 1.0").replace(
    "image_loss_weight: {img_weight}", "image_loss_weight: 0.0"
)
write("baselines/clip_vitb16_cc12m.yaml", "CLIP baseline on synthetic images: image-text loss only, one image per caption",
      clip, 15, "cc12m", views=1, tokens="77")  # fmt: skip

FRAGMENT = """# Backbone fragment: stablerep fit --config RECIPE.yaml --config configs/backbones/{stem}.yaml
model:
  init_args:
    backbone:
      class_path: stablerep_pl.models.TimmBackbone
      init_args:
        name: {name}
"""
for stem, name in [("vit_s16", "vit_small_patch16_224"), ("vit_b16", "vit_base_patch16_224"),
                   ("vit_l16", "vit_large_patch16_224"), ("resnet50", "resnet50")]:  # fmt: skip
    (ROOT / "backbones" / f"{stem}.yaml").write_text(FRAGMENT.format(stem=stem, name=name))
print("wrote recipes")
