import pytest
import torch

from stablerep_pl.models import ProjectionHead


def test_paper_shape_of_the_head() -> None:
    head = ProjectionHead(768, 4096, 256, num_layers=3)
    kinds = [type(m).__name__ for m in head.mlp]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head.mlp[0].in_features == 768 and head.mlp[-1].out_features == 256


def test_batchnorm_statistics_are_per_view() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(8, 16, 4).train()
    n, m = 5, 3
    # Views with very different statistics: per-view BN must normalise each on its own.
    x = torch.cat([torch.randn(n, 8) * (k + 1) + 10 * k for k in range(m)])
    out = head(x, num_views=m)
    separately = torch.cat([head(x[k * n : (k + 1) * n]) for k in range(m)])
    torch.testing.assert_close(out, separately)
    jointly = head(x)
    assert not torch.allclose(out, jointly, atol=1e-3)


def test_rows_must_split_into_views() -> None:
    with pytest.raises(ValueError, match="views"):
        ProjectionHead(4, 8, 2)(torch.randn(7, 4), num_views=2)
