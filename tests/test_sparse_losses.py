"""`vtd_trl.losses.sparse_distillation_loss` (top-k + tail bucket) against the dense loss and hand-computed values."""

import math

import pytest
import torch

from vtd_trl.losses import (
    distillation_loss,
    sparse_distillation_loss,
    sparse_distillation_loss_from_logits,
    topk_logprobs,
)

B, T, H_S, H_T, V = 2, 6, 8, 12, 40


def make_inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(B, T, H_S, generator=generator)
    student_weight = torch.randn(V + 3, H_S, generator=generator)  # a student head padded larger
    teacher_hidden = torch.randn(B, T, H_T, generator=generator)
    teacher_weight = torch.randn(V, H_T, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0, 1, 0], [1, 0, 1, 1, 0, 0]], dtype=torch.bool)
    return student_hidden, student_weight, teacher_hidden, teacher_weight, mask


def with_grads(loss_fn, student_hidden, student_weight):
    student_hidden = student_hidden.clone().requires_grad_()
    student_weight = student_weight.clone().requires_grad_()
    loss = loss_fn(student_hidden, student_weight)
    loss.backward()
    return loss.detach(), student_hidden.grad, student_weight.grad


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_full_vocabulary_topk_matches_dense(beta, temperature):
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = make_inputs()
    options = dict(beta=beta, temperature=temperature, num_items=7)
    dense = with_grads(
        lambda h, w: distillation_loss(h, w, teacher_hidden, teacher_weight, mask, backend="naive", **options),
        student_hidden,
        student_weight,
    )
    log_pt, ids = topk_logprobs(teacher_hidden, teacher_weight, V, temperature=temperature)
    order = torch.randperm(V, generator=torch.Generator().manual_seed(1))  # the order of the top-k does not matter
    log_pt, ids = log_pt[..., order], ids[..., order].int()
    sparse = with_grads(
        lambda h, w: sparse_distillation_loss(h, w, log_pt, ids, mask, vocab_size=V, chunk_size=3, **options),
        student_hidden,
        student_weight,
    )
    for got, want in zip(sparse, dense, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    logits = (student_hidden @ student_weight[:V].t()).requires_grad_()
    from_logits = sparse_distillation_loss_from_logits(logits, log_pt, ids, mask, **options)
    torch.testing.assert_close(from_logits, dense[0], rtol=1e-5, atol=1e-6)


def test_masked_tokens_are_ignored_and_num_items_divides():
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = make_inputs()
    log_pt, ids = topk_logprobs(teacher_hidden, teacher_weight, 5)
    kwargs = dict(beta=0.5, temperature=0.8)
    clean = sparse_distillation_loss(student_hidden, student_weight, log_pt, ids, mask, **kwargs)

    noisy_hidden = student_hidden.clone().masked_fill(~mask.unsqueeze(-1), 1e4).requires_grad_()
    noisy_log_pt = log_pt.masked_fill(~mask.unsqueeze(-1), float("nan"))
    noisy_ids = ids.masked_fill(~mask.unsqueeze(-1), -7)
    loss = sparse_distillation_loss(noisy_hidden, student_weight, noisy_log_pt, noisy_ids, mask, **kwargs)
    loss.backward()
    torch.testing.assert_close(loss, clean)
    assert torch.all(noisy_hidden.grad[~mask] == 0)
    assert noisy_hidden.grad[mask].abs().sum() > 0

    total = sparse_distillation_loss(student_hidden, student_weight, log_pt, ids, mask, num_items=1, **kwargs)
    torch.testing.assert_close(clean * int(mask.sum()), total)
    halved = sparse_distillation_loss(
        student_hidden, student_weight, log_pt, ids, mask, num_items=torch.tensor(14), **kwargs
    )
    torch.testing.assert_close(halved, total / 14)


@pytest.mark.parametrize("padding_id", [0, -1])  # vLLM pads with id 0, TRL's async trainer with -1
def test_hand_computed_tail_bucket(padding_id):
    # Student probabilities (0.5, 0.25, 0.125, 0.125); the teacher reports token 1 (0.6), token 0 (0.3) and one
    # padding slot, so its tail bucket holds 0.1 and the student's 0.25.
    student_logits = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log().requires_grad_()
    log_pt = torch.tensor([[math.log(0.6), math.log(0.3), float("-inf")]])
    ids = torch.tensor([[1, 0, padding_id]])
    mask = torch.tensor([True])
    p, q = (0.6, 0.3, 0.1), (0.25, 0.5, 0.25)
    forward_kl = 0.6 * math.log(0.6 / 0.25) + 0.3 * math.log(0.3 / 0.5) + 0.1 * math.log(0.1 / 0.25)
    reverse_kl = 0.25 * math.log(0.25 / 0.6) + 0.5 * math.log(0.5 / 0.3) + 0.25 * math.log(0.25 / 0.1)
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    jsd = 0.5 * sum(a * math.log(a / c) for a, c in zip(p, m, strict=True)) + 0.5 * sum(
        b * math.log(b / c) for b, c in zip(q, m, strict=True)
    )
    for beta, want in ((0.0, forward_kl), (1.0, reverse_kl), (0.5, jsd)):
        loss = sparse_distillation_loss_from_logits(student_logits, log_pt, ids, mask, beta=beta)
        assert loss.item() == pytest.approx(want, rel=1e-6)

    # Forward KL's gradient in the logits is `q - target`: the teacher's mass on its top-k tokens, and its tail mass
    # spread over the other tokens in proportion to the student's probabilities (0.1 * 0.125 / 0.25 each).
    loss = sparse_distillation_loss_from_logits(student_logits, log_pt, ids, mask, beta=0.0)
    (grad,) = torch.autograd.grad(loss, student_logits)
    target = torch.tensor([[0.3, 0.6, 0.05, 0.05]])
    torch.testing.assert_close(grad, torch.tensor([[0.5, 0.25, 0.125, 0.125]]) - target)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_chunked_gradients_match_autograd_below_full_vocabulary(beta):
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = make_inputs()
    log_pt, ids = topk_logprobs(teacher_hidden, teacher_weight, 5, temperature=1.3)
    options = dict(beta=beta, temperature=1.3, num_items=9)
    chunked = with_grads(
        lambda h, w: sparse_distillation_loss(h, w, log_pt, ids, mask, chunk_size=2, **options),
        student_hidden,
        student_weight,
    )
    autograd = with_grads(
        lambda h, w: sparse_distillation_loss_from_logits(h @ w.t(), log_pt, ids, mask, **options),
        student_hidden,
        student_weight,
    )
    for got, want in zip(chunked, autograd, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_sparse_is_a_lower_bound_that_grows_with_k():
    # Coarse-graining never increases a divergence, and top-(k+1) buckets refine top-k buckets.
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = make_inputs()
    for beta in (0.0, 0.5, 1.0):
        dense = distillation_loss(
            student_hidden, student_weight[:V], teacher_hidden, teacher_weight, mask, beta=beta, backend="naive"
        )
        losses = [
            sparse_distillation_loss(
                student_hidden,
                student_weight,
                *topk_logprobs(teacher_hidden, teacher_weight, k),
                mask,
                beta=beta,
                vocab_size=V,
            )
            for k in (1, 4, 16, V)
        ]
        assert all(a <= b + 1e-6 for a, b in zip(losses, losses[1:]))
        assert losses[0] < losses[-1]
        torch.testing.assert_close(losses[-1], dense, rtol=1e-5, atol=1e-6)


def test_empty_mask_is_an_exact_zero():
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = make_inputs()
    log_pt, ids = topk_logprobs(teacher_hidden, teacher_weight, 4)
    student_hidden.requires_grad_()
    for num_items in (None, 0, 5):
        loss = sparse_distillation_loss(
            student_hidden, student_weight, log_pt, ids, torch.zeros_like(mask), beta=0.5, num_items=num_items
        )
        (grad,) = torch.autograd.grad(loss, student_hidden)
        assert loss.item() == 0.0
        assert torch.all(grad == 0)


def test_topk_logprobs_matches_full_softmax():
    _, _, teacher_hidden, teacher_weight, _ = make_inputs()
    log_pt, ids = topk_logprobs(teacher_hidden, teacher_weight, 7, temperature=0.5, chunk_size=5)
    want = (teacher_hidden @ teacher_weight.t() / 0.5).log_softmax(-1).topk(7, dim=-1)
    torch.testing.assert_close(log_pt, want.values)
    assert torch.equal(ids, want.indices)


def _bad(name):
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = make_inputs()
    log_pt, ids = topk_logprobs(teacher_hidden, teacher_weight, 4)
    args = dict(
        student_hidden=student_hidden,
        student_weight=student_weight,
        teacher_topk_logprobs=log_pt,
        teacher_topk_ids=ids,
        mask=mask,
    )
    kwargs = {}
    if name == "mask":
        args["mask"] = mask[:, :-1]
    elif name == "student_weight":
        args["student_weight"] = student_weight[:, :-1]
    elif name == "ids_shape":
        args["teacher_topk_ids"] = ids[..., :-1]
    elif name == "ids_dtype":
        args["teacher_topk_ids"] = ids.float()
    elif name == "id_too_large":
        args["teacher_topk_ids"] = ids.clone().index_fill_(-1, torch.tensor([2]), V + 3)
    elif name == "id_negative":
        args["teacher_topk_ids"] = ids.clone().index_fill_(-1, torch.tensor([0]), -1)
    elif name == "id_repeated":
        args["teacher_topk_ids"] = ids[..., [0, 1, 1, 3]]
    elif name == "logits":
        args["teacher_topk_logprobs"] = teacher_hidden @ teacher_weight[:4].t()
    elif name == "nan":
        args["teacher_topk_logprobs"] = log_pt.clone().index_fill_(-1, torch.tensor([1]), float("nan"))
    elif name == "no_signal":
        args["teacher_topk_logprobs"] = log_pt.clone().index_fill_(0, torch.tensor([1]), float("-inf"))
    elif name == "vocab_size":
        kwargs["vocab_size"] = V + 4
    elif name == "beta":
        kwargs["beta"] = 1.5
    elif name == "temperature":
        kwargs["temperature"] = 0.0
    return args, kwargs


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mask", "`mask`"),
        ("student_weight", "`student_weight`"),
        ("ids_shape", "`teacher_topk_ids`"),
        ("ids_dtype", "`teacher_topk_ids` must be an integer"),
        ("id_too_large", rf"`teacher_topk_ids` must be in \[0, {V + 3}\).*got {V + 3}"),
        ("id_negative", r"`teacher_topk_ids` must be in \[0, .*got -1"),
        ("id_repeated", "`teacher_topk_ids` repeats"),
        ("logits", "`teacher_topk_logprobs` must be log-probabilities"),
        ("nan", "`teacher_topk_logprobs` contains NaN"),
        ("no_signal", "`teacher_topk_logprobs` has no finite entry at 3 masked tokens"),
        ("vocab_size", "`vocab_size`"),
        ("beta", "`beta`"),
        ("temperature", "`temperature`"),
    ],
)
def test_bad_inputs_name_the_argument(name, message):
    args, kwargs = _bad(name)
    with pytest.raises(ValueError, match=message):
        sparse_distillation_loss(**args, **kwargs)


def test_topk_logprobs_rejects_k_outside_the_vocabulary():
    _, _, teacher_hidden, teacher_weight, _ = make_inputs()
    with pytest.raises(ValueError, match="`k` must be in"):
        topk_logprobs(teacher_hidden, teacher_weight, V + 1)
