"""Naive references for the loss tests: explicit Python loops over anchors, float64, PAPER.md literally.

They return per-anchor losses so that a rank's value (the mean over its anchors) can be checked too.
They are deliberately slow and independent of `stablerep_pl.losses` (no shared helpers, no masks
by label sums): only torch's elementary ops on float64 tensors, differentiable for gradient checks.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x.double(), dim=1)


def _cross_entropy(logits: list[Tensor], targets: list[float]) -> Tensor:
    """H(p, q) = −Σ_j p_j log q_j with q = softmax(logits)."""
    stacked = torch.stack(logits)
    log_q = stacked - torch.logsumexp(stacked, dim=0)
    p = torch.tensor(targets, dtype=torch.float64)
    return -(p * log_q).sum()


def naive_multipos(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Per anchor: candidates = all other images, p uniform over same-label candidates, 0 if none."""
    z, ids = _unit(features), labels.tolist()
    out = []
    for a in range(len(ids)):
        candidates = [j for j in range(len(ids)) if j != a]
        positives = [j for j in candidates if ids[j] == ids[a]]
        if not positives:
            out.append(z[a].sum() * 0)  # contributes 0, still counts in the mean
            continue
        logits = [z[a] @ z[j] / temperature for j in candidates]
        targets = [1.0 / len(positives) if ids[j] == ids[a] else 0.0 for j in candidates]
        out.append(_cross_entropy(logits, targets))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def naive_multipos_queue(
    features: Tensor,
    labels: Tensor,
    queue: Tensor,
    queue_labels: Tensor,
    temperature: float,
    keys: Tensor | None = None,
) -> Tensor:
    """Per anchor: candidates = all other batch images and every queue entry (a constant: no gradient),
    softmax over all of them, p uniform over same-label candidates in batch ∪ queue, 0 if none.
    With `keys` (momentum-encoder rows of the same images), the other batch images are represented by
    their keys, constants like the queue (MoCo); the anchor stays the online feature."""
    z, q = _unit(features), _unit(queue.detach())
    others = z if keys is None else _unit(keys.detach())
    ids, queue_ids = labels.tolist(), queue_labels.tolist()
    out = []
    for a in range(len(ids)):
        candidates = [(others[j], ids[j]) for j in range(len(ids)) if j != a]
        candidates += [(q[k], queue_ids[k]) for k in range(len(queue_ids))]
        positives = [c for c in candidates if c[1] == ids[a]]
        if not positives:
            out.append(z[a].sum() * 0)
            continue
        logits = [z[a] @ vector / temperature for vector, _ in candidates]
        targets = [1.0 / len(positives) if label == ids[a] else 0.0 for _, label in candidates]
        out.append(_cross_entropy(logits, targets))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def naive_supcon(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Khosla et al. 2020, eq. 2 (L_out), per anchor i over class labels:
    −1/|P(i)| Σ_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ) ), P(i) = same class, a ≠ i.
    Written as that sum of log-ratios (not a cross-entropy with a target distribution, as
    `naive_multipos` is); an anchor alone in its class gives 0 (the original code gives NaN)."""
    z, ids = _unit(features), labels.tolist()
    out = []
    for i in range(len(ids)):
        others = [a for a in range(len(ids)) if a != i]
        positives = [p for p in others if ids[p] == ids[i]]
        if not positives:
            out.append(z[i].sum() * 0)
            continue
        denominator = torch.stack([torch.exp(z[i] @ z[a] / temperature) for a in others]).sum()
        terms = [torch.log(torch.exp(z[i] @ z[p] / temperature) / denominator) for p in positives]
        out.append(-torch.stack(terms).sum() / len(positives))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def _one_direction(anchors: Tensor, candidates: Tensor, a_ids: list, c_ids: list, scale: Tensor) -> Tensor:
    out = []
    for a in range(len(a_ids)):
        positives = [j for j in range(len(c_ids)) if c_ids[j] == a_ids[a]]
        if not positives:
            out.append(anchors[a].sum() * 0)
            continue
        logits = [scale * (anchors[a] @ candidates[j]) for j in range(len(c_ids))]
        targets = [1.0 / len(positives) if c_ids[j] == a_ids[a] else 0.0 for j in range(len(c_ids))]
        out.append(_cross_entropy(logits, targets))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def naive_image_text(
    images: Tensor, texts: Tensor, image_labels: Tensor, text_labels: Tensor, logit_scale: Tensor | float
) -> tuple[Tensor, Tensor]:
    """(per-image image→text losses, per-text text→image losses) with multi-positive targets."""
    x, y = _unit(images), _unit(texts)
    scale = torch.as_tensor(logit_scale, dtype=torch.float64)
    i_ids, t_ids = image_labels.tolist(), text_labels.tolist()
    return _one_direction(x, y, i_ids, t_ids, scale), _one_direction(y, x, t_ids, i_ids, scale)


def naive_clip(images: Tensor, texts: Tensor, logit_scale: Tensor | float) -> tuple[Tensor, Tensor]:
    """CLIP: cross-entropy towards the paired row, per image and per text."""
    x, y = _unit(images), _unit(texts)
    scale = torch.as_tensor(logit_scale, dtype=torch.float64)
    n = x.shape[0]
    i2t = [-torch.log_softmax(torch.stack([scale * (x[i] @ y[j]) for j in range(n)]), 0)[i] for i in range(n)]
    t2i = [-torch.log_softmax(torch.stack([scale * (y[i] @ x[j]) for j in range(n)]), 0)[i] for i in range(n)]
    return torch.stack(i2t), torch.stack(t2i)


def naive_siglip(
    images: Tensor,
    texts: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float,
    image_labels: Tensor | None = None,
    text_labels: Tensor | None = None,
) -> Tensor:
    """Per image: Σ_j −log σ(z_ij (t x_i·y_j + b)), z = +1 for matching pairs (paired rows or labels)."""
    x, y = _unit(images), _unit(texts)
    t = torch.as_tensor(logit_scale, dtype=torch.float64)
    b = torch.as_tensor(logit_bias, dtype=torch.float64)
    i_ids = image_labels.tolist() if image_labels is not None else list(range(x.shape[0]))
    t_ids = text_labels.tolist() if text_labels is not None else list(range(y.shape[0]))
    out = []
    for i in range(x.shape[0]):
        terms = []
        for j in range(y.shape[0]):
            z = 1.0 if i_ids[i] == t_ids[j] else -1.0
            terms.append(-F.logsigmoid(z * (t * (x[i] @ y[j]) + b)))
        out.append(torch.stack(terms).sum())
    return torch.stack(out)


def naive_ntxent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's ℓ(k, pair(k)) for the 2N views ordered [z1; z2]."""
    z = _unit(torch.cat([z1, z2]))
    n2 = z.shape[0]
    out = []
    for k in range(n2):
        pair = (k + n2 // 2) % n2
        denominator = torch.stack([torch.exp(z[k] @ z[j] / temperature) for j in range(n2) if j != k]).sum()
        out.append(-torch.log(torch.exp(z[k] @ z[pair] / temperature) / denominator))
    return torch.stack(out)


def random_labels(n: int, generator: torch.Generator, groups: int | None = None) -> Tensor:
    """Labels with uneven group sizes, singletons and non-contiguous, negative ids."""
    groups = groups or max(1, n // 3)
    raw = torch.randint(0, groups, (n,), generator=generator)
    return raw * 7 - 5


@pytest.fixture(scope="session")
def naive() -> SimpleNamespace:
    """The references, as one namespace (tests import nothing from this conftest)."""
    return SimpleNamespace(
        multipos=naive_multipos,
        supcon=naive_supcon,
        multipos_queue=naive_multipos_queue,
        image_text=naive_image_text,
        clip=naive_clip,
        siglip=naive_siglip,
        ntxent=naive_ntxent,
        random_labels=random_labels,
    )
