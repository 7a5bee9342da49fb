"""View sampling: m of k without replacement, and the early check both on-the-fly datasets share."""

import pytest
import torch

from stablerep_pl.data.on_the_fly import CaptionGroupDataset
from stablerep_pl.data.reuse_buffer import ReuseBufferDataset
from stablerep_pl.data.sampling import check_views, choose_views
from stablerep_pl.generation.procedural import ProceduralGenerator


def test_choose_views_draws_distinct_images_or_repeats_one() -> None:
    torch.manual_seed(0)
    distinct = choose_views(10, 6)
    assert len(set(distinct)) == 6 and all(0 <= i < 10 for i in distinct)
    same = choose_views(10, 4, distinct=False)
    assert len(same) == 4 and len(set(same)) == 1


def test_too_many_views_fail_early_in_both_datasets() -> None:
    check_views(5, 5)
    check_views(2, 6, distinct=False)  # SimCLR: one image augmented m times
    generator = ProceduralGenerator(size=16)
    for build in (
        lambda: CaptionGroupDataset(["a red star"], generator, 3, 4, transform=lambda p: p),
        lambda: ReuseBufferDataset(["a red star"], generator, 3, 4, transform=lambda p: p),
    ):
        with pytest.raises(ValueError, match=r"views \(4\) <= images_per_caption \(3\)"):
            build()
