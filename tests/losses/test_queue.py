"""MultiPosQueueLoss / multipos_queue_loss against the naive float64 reference (single process).

The reference (`naive.multipos_queue` in conftest) is a loop over anchors: softmax over every other
batch image and every queue entry, target uniform over same-id candidates in batch ∪ queue, 0 for an
anchor without positives, queue entries constant. Multi-step cases track the queue by hand (FIFO,
enqueued after the loss), so they also check when and what the module enqueues.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stablerep_pl.losses import MultiPosConLoss, MultiPosQueueLoss, multipos_queue_loss

TOL = {"rtol": 1e-6, "atol": 1e-6}
DIM = 6


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1)


def value_and_grad(fn, features: torch.Tensor, *args) -> tuple[torch.Tensor, torch.Tensor]:
    x = features.detach().clone().requires_grad_(True)
    value = fn(x, *args)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


# (batch ids, queue ids): captions in both, only in the queue, only in the batch, nowhere else.
CASES = {
    "empty_queue": ([0, 0, 1, 1, 2, 5], []),
    "caption_in_batch_and_queue": ([0, 0, 1, 1, 2, 2, 5], [1, 7, 7, 0, 9]),
    "positives_only_in_queue": ([3, 4, 5, 6], [3, 3, 4, 8]),
    "anchor_without_any_positive": ([0, 0, 11, 12], [0, 13]),
    "negative_ids_and_minus_one": ([-1, -1, -5, 2], [-5, -1, 2, 2, 2]),
    "all_singletons_queue_of_negatives": ([1, 2, 3], [4, 5, 6, 7]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("temperature", [0.1, 0.05, 0.7])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_function_matches_naive(naive, case: str, temperature: float, chunk_size: int | None) -> None:
    batch_ids, queue_ids = (torch.tensor(ids, dtype=torch.int64) for ids in CASES[case])
    features = torch.randn(len(batch_ids), DIM, dtype=torch.float64)
    queue = unit(torch.randn(len(queue_ids), DIM, dtype=torch.float64))
    got = value_and_grad(
        lambda x: multipos_queue_loss(x, batch_ids, queue, queue_ids, temperature, chunk_size=chunk_size),
        features,
    )
    expected = value_and_grad(
        lambda x: naive.multipos_queue(x, batch_ids, queue, queue_ids, temperature).mean(), features
    )
    torch.testing.assert_close(got, expected, **TOL)


def test_empty_queue_is_exactly_the_plain_loss() -> None:
    features, labels = torch.randn(12, DIM), torch.arange(12) // 3
    module = MultiPosQueueLoss(DIM, queue_size=16).train()
    got = value_and_grad(lambda x: module(x, labels), features)
    expected = value_and_grad(lambda x: MultiPosConLoss(0.1)(x, labels), features)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_queue_entries_get_no_gradient(naive) -> None:
    labels, queue_ids = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 2])
    features = torch.randn(4, DIM, dtype=torch.float64, requires_grad=True)
    queue = unit(torch.randn(3, DIM, dtype=torch.float64)).requires_grad_(True)
    multipos_queue_loss(features, labels, queue, queue_ids).backward()
    assert queue.grad is None
    assert features.grad is not None and features.grad.abs().sum() > 0
    module = MultiPosQueueLoss(DIM).train()
    assert all(not b.requires_grad for b in module.buffers()) and not list(module.parameters())


def test_partially_filled_queue_uses_only_filled_slots(naive) -> None:
    """Empty slots (zero rows, id −1) must not be candidates, not even for an anchor with id −1."""
    module = MultiPosQueueLoss(DIM, queue_size=10, temperature=0.1).double().train()
    stored, stored_ids = unit(torch.randn(4, DIM, dtype=torch.float64)), torch.tensor([3, -1, 8, 3])
    module.enqueue(stored, stored_ids)
    assert int(module.queue_filled) == 4
    features, labels = torch.randn(6, DIM, dtype=torch.float64), torch.tensor([3, 3, -1, 5, 5, 9])
    got = value_and_grad(lambda x: module(x, labels), features)
    expected = value_and_grad(
        lambda x: naive.multipos_queue(x, labels, stored, stored_ids, 0.1).mean(), features
    )
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("with_keys", [False, True])
def test_steps_enqueue_after_the_loss_fifo_with_wraparound(naive, with_keys: bool) -> None:
    """Five steps into a queue of 7: every step's loss sees the queue of the steps before (never its
    own images), the batch's candidates are its keys when given, and the queue holds the newest rows
    (keys if given) in FIFO order."""
    g = torch.Generator().manual_seed(5)

    def reference(x, labels, queue, queue_ids, keys):
        return naive.multipos_queue(x, labels, queue, queue_ids, 0.2, keys).mean()

    module = MultiPosQueueLoss(DIM, queue_size=7, temperature=0.2).double().train()
    history: list[tuple[torch.Tensor, torch.Tensor]] = []  # every enqueued row, oldest first
    for step, n in enumerate([3, 4, 2, 9, 5]):  # 9 > 7: a batch larger than the whole queue
        labels = torch.randint(0, 4, (n,), generator=g) + step  # captions recur across steps
        features = torch.randn(n, DIM, dtype=torch.float64, generator=g)
        keys = torch.randn(n, DIM, dtype=torch.float64, generator=g) if with_keys else None
        queue = [row for row, _ in history[-7:]]
        queue_ids = torch.tensor([i for _, i in history[-7:]], dtype=torch.int64)
        queue_rows = torch.stack(queue) if queue else torch.zeros(0, DIM, dtype=torch.float64)
        got = value_and_grad(module, features, labels, keys)
        expected = value_and_grad(reference, features, labels, queue_rows, queue_ids, keys)
        torch.testing.assert_close(got, expected, **TOL)
        new_rows = unit(keys if with_keys else features)
        history += list(zip(new_rows, labels.tolist()))
        # FIFO: the k-th enqueued row (0-based) sits in slot k mod 7.
        total = len(history)
        assert int(module.queue_pointer) == total % 7 and int(module.queue_filled) == min(total, 7)
        for k in range(max(0, total - 7), total):
            torch.testing.assert_close(module.queue_features[k % 7], history[k][0], **TOL)
            assert int(module.queue_labels[k % 7]) == history[k][1]


def test_enqueue_order_by_hand() -> None:
    module = MultiPosQueueLoss(2, queue_size=5)
    rows = torch.arange(14, dtype=torch.float32).reshape(7, 2)
    module.enqueue(rows[:2], torch.tensor([0, 1]))
    module.enqueue(rows[2:4], torch.tensor([2, 3]))
    assert module.queue_labels.tolist() == [0, 1, 2, 3, -1] and int(module.queue_filled) == 4
    module.enqueue(rows[4:6], torch.tensor([4, 5]))  # wraps: 5 overwrites the oldest (0)
    assert module.queue_labels.tolist() == [5, 1, 2, 3, 4]
    assert int(module.queue_pointer) == 1 and int(module.queue_filled) == 5
    assert torch.equal(module.queue_features[0], rows[5]) and torch.equal(module.queue_features[4], rows[4])
    # 7 rows > 5 slots, as if written in turn from slot 1: the newest 5 (12..16) from slot 3 on.
    module.enqueue(rows, torch.arange(10, 17))
    assert module.queue_labels.tolist() == [14, 15, 16, 12, 13] and int(module.queue_pointer) == 3


def test_eval_mode_neither_reads_nor_writes_the_queue() -> None:
    module = MultiPosQueueLoss(DIM, queue_size=8).train()
    module.enqueue(unit(torch.randn(5, DIM)), torch.tensor([0, 1, 2, 3, 4]))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    features, labels = torch.randn(6, DIM), torch.tensor([0, 0, 1, 1, 2, 2])
    module.eval()
    assert torch.equal(module(features, labels, torch.randn(6, DIM)), MultiPosConLoss()(features, labels))
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in before.items())


def test_state_dict_round_trip_gives_the_same_next_loss() -> None:
    first = MultiPosQueueLoss(DIM, queue_size=6).train()
    for _ in range(3):
        first(torch.randn(4, DIM), torch.randint(0, 3, (4,)))
    state = first.state_dict()
    assert set(state) == {"queue_features", "queue_labels", "queue_pointer", "queue_filled"}
    second = MultiPosQueueLoss(DIM, queue_size=6).train()
    second.load_state_dict(state)
    features, labels = torch.randn(5, DIM), torch.tensor([0, 1, 1, 2, 2])
    assert torch.equal(first(features, labels), second(features, labels))
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())


def test_queue_size_zero_is_the_plain_loss() -> None:
    module = MultiPosQueueLoss(DIM, queue_size=0).train()
    features, labels = torch.randn(6, DIM), torch.tensor([0, 0, 1, 1, 2, 2])
    for _ in range(2):
        assert torch.equal(module(features, labels), MultiPosConLoss()(features, labels))


def test_half_precision_features_use_a_float32_queue() -> None:
    module = MultiPosQueueLoss(DIM, queue_size=8).train()
    loss = module(torch.randn(4, DIM).bfloat16(), torch.tensor([0, 0, 1, 1]))
    assert loss.dtype == torch.float32 and module.queue_features.dtype == torch.float32
    assert int(module.queue_filled) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 0}, "dim must be a positive int"),
        ({"dim": 4, "queue_size": -1}, "queue_size must be an int >= 0"),
        ({"dim": 4, "temperature": 0.0}, "temperature must be finite and > 0"),
        ({"dim": 4, "chunk_size": 0}, "chunk_size must be None or a positive int"),
    ],
)
def test_bad_settings_fail_early(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiPosQueueLoss(**kwargs)


def test_bad_inputs_fail_with_names() -> None:
    module = MultiPosQueueLoss(4, queue_size=8).train()
    with pytest.raises(ValueError, match="features and queue_features must have the same feature dimension"):
        module(torch.randn(3, 5), torch.arange(3))
    with pytest.raises(ValueError, match="features and keys must have the same number of rows"):
        module(torch.randn(3, 4), torch.arange(3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="labels must hold integer ids"):
        module(torch.randn(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match="queue_labels must have shape"):
        multipos_queue_loss(torch.randn(3, 4), torch.arange(3), torch.randn(2, 4), torch.arange(3))


def test_keys_are_the_batch_candidates_and_carry_no_gradient(naive) -> None:
    """MoCo: with keys, the other batch images enter as their keys (constants). Keys equal to the
    features give the plain loss's value, but gradient only through the anchors (half the path)."""
    labels, queue_ids = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([1, 3])
    features = torch.randn(6, DIM, dtype=torch.float64)
    queue = unit(torch.randn(2, DIM, dtype=torch.float64))
    keys = torch.randn(6, DIM, dtype=torch.float64)

    def with_keys(x, k):
        return multipos_queue_loss_with_keys(x, labels, k, queue, queue_ids)

    got = value_and_grad(lambda x: with_keys(x, keys), features)
    expected = value_and_grad(
        lambda x: naive.multipos_queue(x, labels, queue, queue_ids, 0.1, keys).mean(), features
    )
    torch.testing.assert_close(got, expected, **TOL)
    same_value, anchor_only_grad = value_and_grad(lambda x: with_keys(x, x.detach()), features)
    plain_value, plain_grad = value_and_grad(
        lambda x: multipos_queue_loss(x, labels, queue, queue_ids), features
    )
    torch.testing.assert_close(same_value, plain_value, **TOL)
    assert not torch.allclose(anchor_only_grad, plain_grad)


def multipos_queue_loss_with_keys(features, labels, keys, queue, queue_ids) -> torch.Tensor:
    """The module's training-mode loss with `keys`, on a queue filled with (queue, queue_ids)."""
    module = MultiPosQueueLoss(DIM, queue_size=queue.shape[0]).double().train()
    module.enqueue(queue, queue_ids)
    return module(features, labels, keys)
