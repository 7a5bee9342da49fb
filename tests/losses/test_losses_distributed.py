"""Two gloo ranks vs one process on the concatenated batch, for every loss (values and all gradients).

One pair of worker subprocesses runs every scenario once per module (`losses_dist_worker.py`). Rank r
back-propagates w_r · L_r with w_r = n_r / N (= 1/world, DDP's averaging, when sizes are equal). Then:
- L_r equals the mean of the naive per-anchor losses over rank r's anchors (against global candidates);
- Σ_r w_r L_r equals the single-process loss (the plain mean over ranks when sizes are equal);
- the gradients of split inputs, concatenated over ranks, and the sum over ranks of the gradients of
  replicated inputs (logit_scale, logit_bias) equal the single-process gradients.
So with equal sizes DDP's averaged gradient is exact; with unequal sizes, weighting rank r's loss by
n_r · world / N makes it exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gloo_workers import run_gloo_workers

TOL = {"rtol": 1e-6, "atol": 1e-6}
WORLD = 2
WORKER = Path(__file__).with_name("losses_dist_worker.py")


def _build_scenarios() -> dict[str, dict]:
    g = torch.Generator().manual_seed(0)

    def randn(n: int, dim: int = 5) -> torch.Tensor:
        return torch.randn(n, dim, dtype=torch.float64, generator=g)

    def labels(n: int, groups: int) -> torch.Tensor:
        return torch.randint(0, groups, (n,), generator=g) * 3 - 4  # shared across ranks, uneven

    scale, bias = torch.tensor(6.0, dtype=torch.float64), torch.tensor(-2.5, dtype=torch.float64)
    out: dict[str, dict] = {}

    def add(name: str, loss: str, init: dict, tensors: dict, splits: dict, **extra) -> None:
        """`splits`: rows per rank of each split input; inputs not listed are replicated scalars."""
        first = splits[next(iter(tensors))]
        weights = [n / sum(first) for n in first]
        out[name] = {"loss": loss, "init": init, "args": list(tensors), "tensors": tensors, "splits": splits}
        out[name] |= {"weights": weights, **extra}

    def same(split: list[int], *names: str) -> dict:
        return dict.fromkeys(names, split)

    for name, split, init in [
        ("multipos_equal", [6, 6], {"temperature": 0.1}),
        ("multipos_unequal", [5, 9], {"temperature": 0.1}),
        ("multipos_unequal_chunked", [5, 9], {"temperature": 0.1, "chunk_size": 2}),
        ("multipos_tau0.03", [8, 8], {"temperature": 0.03}),
        ("multipos_rank_without_anchors", [0, 7], {"temperature": 0.1}),
    ]:
        n = sum(split)
        tensors = {"features": randn(n), "labels": labels(n, n // 2)}
        add(name, "MultiPosConLoss", init, tensors, same(split, "features", "labels"))
    tensors = {"features": randn(11), "labels": labels(11, 3)}
    add("supcon_unequal", "SupConLoss", {"temperature": 0.07}, tensors, same([7, 4], "features", "labels"))
    tensors = {"features": randn(12), "labels": labels(12, 4)}
    init = {"gather_distributed": False}
    add(
        "multipos_no_gather", "MultiPosConLoss", init, tensors, same([6, 6], "features", "labels"), local=True
    )
    for name, split in [("ntxent_equal", [4, 4]), ("ntxent_unequal", [3, 5])]:
        add(
            name,
            "NTXentLoss",
            {"temperature": 0.2},
            {"z1": randn(8), "z2": randn(8)},
            same(split, "z1", "z2"),
        )

    # StableRep+: m images per caption; one caption spans both ranks, one has no image, one no text.
    image_labels, text_labels = (
        torch.tensor([0, 0, 1, 1, 2, 9, 2, 3, 3, 4, 4, 5]),
        torch.tensor([0, 1, 2, 3, 4, 7]),
    )
    tensors = {
        "images": randn(12),
        "texts": randn(6),
        "image_labels": image_labels,
        "text_labels": text_labels,
    }
    splits = same([6, 6], "images", "image_labels") | same([3, 3], "texts", "text_labels")
    add("image_text_equal", "MultiPosImageTextLoss", {}, tensors | {"logit_scale": scale}, splits)
    image_labels = torch.tensor([0, 1, 0, 1, 0, 1, 2, 3, 4, 5, 2, 3, 4, 5, 2, 3, 4, 5])  # m = 3
    tensors = {
        "images": randn(18),
        "texts": randn(6),
        "image_labels": image_labels,
        "text_labels": torch.arange(6),
    }
    splits = same([6, 12], "images", "image_labels") | same([2, 4], "texts", "text_labels")
    init = {"chunk_size": 2}
    add("image_text_unequal_chunked", "MultiPosImageTextLoss", init, tensors | {"logit_scale": scale}, splits)
    for name, split in [("clip_equal", [5, 5]), ("clip_unequal", [3, 6])]:
        tensors = {"images": randn(sum(split)), "texts": randn(sum(split)), "logit_scale": scale}
        add(name, "ClipLoss", {}, tensors, same(split, "images", "texts"))

    scalars = {"logit_scale": scale, "logit_bias": bias}
    tensors = {"images": randn(10), "texts": randn(10)} | scalars
    add("siglip_equal", "SigLipLoss", {}, tensors, same([5, 5], "images", "texts"))
    tensors = {"images": randn(9), "texts": randn(9)} | scalars
    add("siglip_unequal_chunked", "SigLipLoss", {"chunk_size": 3}, tensors, same([3, 6], "images", "texts"))
    labelled = {"image_labels": image_labels[:12], "text_labels": torch.tensor([0, 1, 2, 3, 4, 9])}
    tensors = {"images": randn(12), "texts": randn(6)} | scalars | labelled
    splits = same([4, 8], "images", "image_labels") | same([2, 4], "texts", "text_labels")
    add("siglip_labelled_unequal", "SigLipLoss", {}, tensors, splits)
    return out


SCENARIOS = _build_scenarios()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    """Run both ranks once for the whole module; fail with their stderr if anything goes wrong."""
    tmp = tmp_path_factory.mktemp("dist_losses")
    torch.save(SCENARIOS, tmp / "scenarios.pt")
    return run_gloo_workers(WORKER, tmp, [str(tmp / "scenarios.pt")], world=WORLD, timeout=120)


def _directions(naive, s: dict, t: dict) -> list[torch.Tensor]:
    """Per-anchor naive losses of each averaged direction, in global row order."""
    init = s["init"]
    if s["loss"] == "MultiPosConLoss":
        return [naive.multipos(t["features"], t["labels"], init.get("temperature", 0.1))]
    if s["loss"] == "SupConLoss":
        return [naive.supcon(t["features"], t["labels"], init.get("temperature", 0.1))]
    if s["loss"] == "NTXentLoss":
        per_anchor = naive.ntxent(t["z1"], t["z2"], init["temperature"])
        return [per_anchor[: t["z1"].shape[0]], per_anchor[t["z1"].shape[0] :]]
    if s["loss"] == "MultiPosImageTextLoss":
        return list(
            naive.image_text(t["images"], t["texts"], t["image_labels"], t["text_labels"], t["logit_scale"])
        )
    if s["loss"] == "ClipLoss":
        return list(naive.clip(t["images"], t["texts"], t["logit_scale"]))
    return [
        naive.siglip(
            t["images"],
            t["texts"],
            t["logit_scale"],
            t["logit_bias"],
            t.get("image_labels"),
            t.get("text_labels"),
        )
    ]


def _direction_splits(s: dict) -> list[list[int]]:
    splits = s["splits"]
    if s["loss"] == "NTXentLoss":
        return [splits["z1"], splits["z1"]]
    if s["loss"] in ("MultiPosImageTextLoss", "ClipLoss"):
        return [splits["images"], splits["texts"]]
    return [splits[s["args"][0]]]


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.sum() / max(x.shape[0], 1)


def _leaves(s: dict, rank: int | None = None) -> dict[str, torch.Tensor]:
    """Global inputs (rank None) or one rank's slice, floats as fresh leaves requiring grad."""
    out = {}
    for name, tensor in s["tensors"].items():
        splits = s["splits"].get(name)
        if rank is not None and splits is not None:
            start = sum(splits[:rank])
            tensor = tensor[start : start + splits[rank]]
        out[name] = tensor.clone().requires_grad_(True) if tensor.is_floating_point() else tensor.clone()
    return out


@pytest.mark.parametrize("name", [n for n in SCENARIOS if not SCENARIOS[n].get("local")])
def test_two_ranks_equal_one_process(naive, rank_results: list[dict], name: str) -> None:
    s = SCENARIOS[name]
    leaves = _leaves(s)
    directions = _directions(naive, s, leaves)
    global_loss = sum(_mean(d) for d in directions) / len(directions)
    floats = [n for n, v in leaves.items() if v.is_floating_point()]
    global_grads = dict(zip(floats, torch.autograd.grad(global_loss, [leaves[n] for n in floats])))
    results = [rank[name] for rank in rank_results]

    for rank, result in enumerate(results):  # each rank: its anchors against the global candidates
        expected = 0
        for per_anchor, splits in zip(directions, _direction_splits(s)):
            start = sum(splits[:rank])
            expected = expected + _mean(per_anchor[start : start + splits[rank]]) / len(directions)
        torch.testing.assert_close(result["loss"], expected.detach(), **TOL)
    combined = sum(w * r["loss"] for w, r in zip(s["weights"], results))
    torch.testing.assert_close(combined, global_loss.detach(), **TOL)
    if len(set(s["weights"])) == 1:  # equal sizes: the plain mean over ranks is the global loss
        torch.testing.assert_close(sum(r["loss"] for r in results) / WORLD, global_loss.detach(), **TOL)
    for n in floats:
        if n in s["splits"]:
            got = torch.cat([r["grads"][n] for r in results])
        else:
            got = sum(r["grads"][n] for r in results)
        torch.testing.assert_close(got, global_grads[n], **TOL, msg=lambda m, n=n: f"grad of {n}: {m}")


def test_gather_disabled_stays_local(naive, rank_results: list[dict]) -> None:
    s = SCENARIOS["multipos_no_gather"]
    for rank in range(WORLD):
        local = _leaves(s, rank)
        value = naive.multipos(local["features"], local["labels"], 0.1).mean()
        (grad,) = torch.autograd.grad(value * s["weights"][rank], local["features"])
        result = rank_results[rank]["multipos_no_gather"]
        torch.testing.assert_close(result["loss"], value.detach(), **TOL)
        torch.testing.assert_close(result["grads"]["features"], grad, **TOL)


def test_gather_matches_torch_and_returns_grads_to_producer(rank_results: list[dict]) -> None:
    for case, sizes in [("gather_equal", [4, 4]), ("gather_unequal", [2, 5])]:
        weights = torch.arange(sum(sizes) * 3, dtype=torch.float64).reshape(-1, 3)
        gathered = rank_results[0][case]["ours"]
        for rank in range(WORLD):
            result = rank_results[rank][case]
            torch.testing.assert_close(result["ours"], gathered)  # same global layout on every rank
            start = sum(sizes[:rank])
            # Each of the two ranks' losses puts `weights` on our rows: the producer gets the sum.
            torch.testing.assert_close(result["ours_grad"], WORLD * weights[start : start + sizes[rank]])
            if "theirs" in result:
                torch.testing.assert_close(result["theirs"], result["ours"])
                torch.testing.assert_close(result["theirs_grad"], result["ours_grad"])
