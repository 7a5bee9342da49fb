"""The default model id of DiffusionGenerator is the one the paper's render config uses."""

import inspect
from pathlib import Path

import yaml

from stablerep_pl.generation.diffusion import DiffusionGenerator

SD15 = Path(__file__).resolve().parents[2] / "configs" / "render" / "sd15.yaml"


def test_default_model_matches_the_sd15_render_config() -> None:
    config = yaml.safe_load(SD15.read_text())["generator"]["init_args"]
    default = inspect.signature(DiffusionGenerator).parameters["model"].default
    assert default == config["model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
