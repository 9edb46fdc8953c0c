"""`vtd_trl.losses` against independent references: TRL's GKD `generalized_jsd_loss` and the DPO formula."""

import math
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from trl.experimental.gkd import GKDTrainer

from vtd_trl import losses
from vtd_trl.losses import distillation_loss, dpo_loss

BACKENDS = ["naive", "chunked", "trl", "liger", "auto"]
B, T, H_S, H_T, V = 2, 6, 8, 12, 40


def make_inputs(dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(B, T, H_S, generator=generator, dtype=dtype)
    student_weight = torch.randn(V, H_S, generator=generator, dtype=dtype)
    teacher_hidden = torch.randn(B, T, H_T, generator=generator, dtype=dtype)
    teacher_weight = torch.randn(V + 5, H_T, generator=generator, dtype=dtype)  # a teacher head padded larger
    mask = torch.tensor([[1, 1, 1, 0, 1, 0], [1, 0, 1, 1, 0, 0]], dtype=torch.bool)
    return student_hidden, student_weight, teacher_hidden, teacher_weight, mask


def gkd_reference(student_hidden, student_weight, teacher_hidden, teacher_weight, mask, beta, temperature, num_items):
    """TRL's GKD loss on full fp64 logits: the independent reference, with its gradients."""
    student_hidden = student_hidden.detach().double().requires_grad_()
    student_weight = student_weight.detach().double().requires_grad_()
    student_logits = student_hidden @ student_weight.t()
    teacher_logits = teacher_hidden.double() @ teacher_weight[:V].double().t()
    labels = torch.where(mask, 0, -100)
    loss = GKDTrainer.generalized_jsd_loss(
        student_logits, teacher_logits, labels=labels, beta=beta, temperature=temperature, num_items_in_batch=num_items
    )
    loss.backward()
    return loss.detach(), student_hidden.grad, student_weight.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_distillation_loss_matches_gkd(backend, beta, temperature):
    inputs = make_inputs()
    ref_loss, ref_grad_hidden, ref_grad_weight = gkd_reference(*inputs, beta, temperature, num_items=7)

    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = inputs
    student_hidden = student_hidden.float().requires_grad_()
    student_weight = student_weight.float().requires_grad_()
    loss = distillation_loss(
        student_hidden,
        student_weight,
        teacher_hidden.float(),
        teacher_weight.float(),
        mask,
        beta=beta,
        temperature=temperature,
        backend=backend,
        num_items=7,
        chunk_size=3,  # several chunks, one of them ragged
    )
    loss.backward()
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(student_hidden.grad.double(), ref_grad_hidden, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(student_weight.grad.double(), ref_grad_weight, rtol=1e-4, atol=1e-6)


def entropy_gap_reference(inputs, beta, temperature, a):
    """Entropy-gap token weights times each token's divergence, from fp64 logits written out here; the weights are
    constants of the gradient."""
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = inputs
    student_hidden = student_hidden.detach().double().requires_grad_()
    student_weight = student_weight.detach().double().requires_grad_()
    log_ps = ((student_hidden @ student_weight.t())[mask] / temperature).log_softmax(-1)
    log_pt = ((teacher_hidden.double() @ teacher_weight[:V].double().t())[mask] / temperature).log_softmax(-1)
    ps, pt = log_ps.exp(), log_pt.exp()

    def kl(log_p, log_q):
        return (log_p.exp() * (log_p - log_q)).sum(-1)

    if beta == 0.0:
        divergence = kl(log_pt, log_ps)
    elif beta == 1.0:
        divergence = kl(log_ps, log_pt)
    else:
        log_m = (beta * pt + (1 - beta) * ps).log()
        divergence = beta * kl(log_pt, log_m) + (1 - beta) * kl(log_ps, log_m)
    with torch.no_grad():
        gap = -(ps * log_ps).sum(-1) + (pt * log_pt).sum(-1)
        weights = 2.0 / (1.0 + torch.exp(-a * gap))
    loss = (weights * divergence).sum()
    loss.backward()
    return loss.detach(), student_hidden.grad, student_weight.grad, weights


@pytest.mark.parametrize("backend", ["naive", "chunked", "auto"])
@pytest.mark.parametrize(("beta", "temperature", "a"), [(0.0, 1.0, 1.0), (0.5, 0.7, 3.0), (1.0, 1.0, -2.0)])
def test_entropy_gap_weights_match_an_independent_recomputation(backend, beta, temperature, a):
    inputs = make_inputs()
    ref_loss, ref_grad_hidden, ref_grad_weight, weights = entropy_gap_reference(inputs, beta, temperature, a)
    assert weights.min() < 0.9 and weights.max() > 1.1  # the weights differ from 1 on these tokens
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = inputs
    student_hidden = student_hidden.float().requires_grad_()
    student_weight = student_weight.float().requires_grad_()
    loss = distillation_loss(
        student_hidden, student_weight, teacher_hidden.float(), teacher_weight.float(), mask,
        beta=beta, temperature=temperature, backend=backend, num_items=1, chunk_size=3, entropy_gap=a,
    )  # fmt: skip
    loss.backward()
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(student_hidden.grad.double(), ref_grad_hidden, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(student_weight.grad.double(), ref_grad_weight, rtol=1e-4, atol=1e-6)


def test_entropy_gap_needs_a_backend_and_signal_that_weigh_tokens():
    inputs = make_inputs(torch.float32)
    for backend in ("trl", "liger"):
        with pytest.raises(ValueError, match=rf"`entropy_gap=1.0`.*got backend '{backend}'. Use backend 'chunked'"):
            distillation_loss(*inputs, backend=backend, entropy_gap=1.0)
    student_hidden, student_weight, _, _, mask = inputs
    signal = {"topk_logprobs": torch.zeros(B, T, 1), "topk_ids": torch.zeros(B, T, 1, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"needs the teacher's whole distribution"):
        losses.signal_distillation_loss(student_hidden, student_weight, signal, None, mask, entropy_gap=1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_positions_are_ignored(backend):
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = make_inputs(torch.float32)
    kwargs = dict(beta=0.5, temperature=1.0, backend=backend)
    clean = distillation_loss(student_hidden, student_weight, teacher_hidden, teacher_weight, mask, **kwargs)
    noisy_student = student_hidden.clone().masked_fill(~mask.unsqueeze(-1), 1e4).requires_grad_()
    noisy_teacher = teacher_hidden.clone().masked_fill(~mask.unsqueeze(-1), -1e4)
    loss = distillation_loss(noisy_student, student_weight, noisy_teacher, teacher_weight, mask, **kwargs)
    loss.backward()
    torch.testing.assert_close(loss, clean)
    assert torch.all(noisy_student.grad[~mask] == 0)


def test_num_items_defaults_to_mask_sum():
    inputs = make_inputs(torch.float32)
    mean = distillation_loss(*inputs, beta=0.0, backend="chunked")
    total = distillation_loss(*inputs, beta=0.0, backend="chunked", num_items=1)
    torch.testing.assert_close(mean * inputs[-1].sum(), total)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_mask_is_an_exact_connected_zero(backend):
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = make_inputs(torch.float32)
    student_hidden.requires_grad_()
    loss = distillation_loss(
        student_hidden, student_weight, teacher_hidden, teacher_weight, torch.zeros_like(mask), backend=backend
    )
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(student_hidden.grad == 0)


def test_chunked_backend_projects_at_most_one_chunk_of_tokens(monkeypatch):
    rows = []
    project = losses._project

    def recording_project(hidden, weight):
        rows.append(hidden.shape[0])
        return project(hidden, weight)

    monkeypatch.setattr(losses, "_project", recording_project)
    inputs = make_inputs(torch.float32)
    distillation_loss(*inputs, backend="chunked", chunk_size=2)
    assert max(rows) == 2 and sum(rows) == 2 * int(inputs[-1].sum())  # student and teacher, 2 rows at a time


@pytest.mark.parametrize(
    ("tokens", "vocab", "expected"),
    [
        (100, 151936, 32),  # few tokens: the smallest efficient chunk
        (448, 151936, 56),  # 1/8 of the work
        (896, 151936, 112),
        (8192, 151936, 220),  # long batches: the 1 GiB budget at Qwen3's vocabulary
        (8192, 1000, 1024),
    ],
)
def test_chunks_are_sized_from_the_work_and_the_budget(tokens, vocab, expected):
    assert losses.chunk_tokens(tokens, vocab) == expected


# Relative bf16 error of each backend against fp64 on the same bf16-rounded inputs (CPU). Measured: chunked and TRL's
# kernel 2e-8 (both project in fp32), naive 1.8e-4 and Liger's CPU path 1.9e-3 (both round the logits to bf16).
BF16_BOUNDS = {"chunked": 1e-6, "trl": 1e-6, "auto": 1e-6, "naive": 1e-3, "liger": 5e-3}


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_error_against_fp64(backend):
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = (
        x.to(torch.bfloat16) if x.is_floating_point() else x for x in make_inputs(torch.float32, seed=1)
    )
    ref, _, _ = gkd_reference(student_hidden, student_weight, teacher_hidden, teacher_weight, mask, 0.5, 1.0, None)
    loss = distillation_loss(
        student_hidden, student_weight, teacher_hidden, teacher_weight, mask, beta=0.5, backend=backend
    )
    relative_error = abs(loss.double().item() - ref.item()) / ref.item()
    assert relative_error <= BF16_BOUNDS[backend], f"{backend}: relative error {relative_error:.2e}"


@pytest.mark.parametrize(("device", "expected"), [("cuda", "trl"), ("cpu", "chunked"), ("mps", "chunked")])
def test_auto_is_trls_kernel_on_cuda_and_chunked_elsewhere(device, expected):
    assert losses.resolve_backend("auto", torch.device(device)) == expected
    assert losses.resolve_backend("liger", torch.device(device)) == "liger"  # a named backend is kept
    losses.check_backend("auto", torch.device(device))  # `trl` and `chunked` need nothing beyond torch and TRL
    performance = (Path(__file__).resolve().parents[1] / "docs" / "performance.md").read_text()
    assert "`auto` is `trl` on CUDA and `chunked` elsewhere" in performance


def test_auto_on_a_cuda_device_runs_trls_kernel(monkeypatch):
    """What `distillation_loss` runs when `resolve_backend` sees CUDA (mocked: the tensors stay on the CPU)."""
    calls = []
    resolve = losses.resolve_backend
    monkeypatch.setattr(losses, "resolve_backend", lambda backend, device: resolve(backend, torch.device("cuda")))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    apply = losses._TRLDivergence.apply
    monkeypatch.setattr(losses._TRLDivergence, "apply", lambda *args: calls.append(1) or apply(*args))
    inputs = make_inputs(torch.float32)
    auto = distillation_loss(*inputs, beta=0.5, backend="auto")
    assert calls == [1]
    torch.testing.assert_close(auto, distillation_loss(*inputs, beta=0.5, backend="naive"))


def test_trl_backend_gathers_nothing_in_the_backward_pass_under_zero3(monkeypatch):
    """Under ZeRO-3 the trainer gathers both heads around the loss's forward call only. The `trl` backend runs TRL's
    kernel whole inside it: TRL's gather helper finds the heads (cut to the smaller vocabulary here) available, and the
    backward, after the heads are partitioned again, gathers nothing (TRL's own backward would gather them again)."""
    deepspeed = pytest.importorskip("deepspeed")
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus
    from transformers.integrations import deepspeed as hf_deepspeed

    gathered = []
    monkeypatch.setattr(hf_deepspeed, "is_deepspeed_zero3_enabled", lambda: True)
    monkeypatch.setattr(deepspeed.zero, "GatheredParameters", lambda params: gathered.append(params) or nullcontext())
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = make_inputs(torch.float32)
    student_hidden.requires_grad_()
    student_weight, teacher_weight = torch.nn.Parameter(student_weight), torch.nn.Parameter(teacher_weight, False)
    for head in (student_weight, teacher_weight):
        head.ds_status = ZeroParamStatus.AVAILABLE  # gathered by the caller, as in `VtDTrainer._vtd_loss`
    loss = distillation_loss(student_hidden, student_weight, teacher_hidden, teacher_weight, mask, backend="trl")
    for head in (student_weight, teacher_weight):
        head.ds_status = ZeroParamStatus.NOT_AVAILABLE  # partitioned again when the caller's context exits
    loss.backward()
    assert gathered == []
    ref_loss, ref_grad_hidden, ref_grad_weight = gkd_reference(
        student_hidden, student_weight, teacher_hidden, teacher_weight, mask, 0.0, 1.0, None
    )
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(student_hidden.grad.double(), ref_grad_hidden, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(student_weight.grad.double(), ref_grad_weight, rtol=1e-4, atol=1e-6)

    # TRL's kernel called as its trainer calls it would gather both heads again in its backward pass
    from trl.kernels.chunked_divergence import ChunkedDivergenceFunction

    for head in (student_weight, teacher_weight):
        head.ds_status = ZeroParamStatus.AVAILABLE
    h_s, h_t = student_hidden.detach()[mask].requires_grad_(), teacher_hidden[mask]
    divergence, _ = ChunkedDivergenceFunction.apply(h_s, student_weight, None, h_t, teacher_weight, None, 0.0)
    for head in (student_weight, teacher_weight):
        head.ds_status = ZeroParamStatus.NOT_AVAILABLE
    divergence.sum().backward()
    assert [len(params) for params in gathered] == [1, 1]  # the student's head, then the teacher's


def test_dpo_loss_matches_the_sigmoid_formula():
    chosen = torch.tensor([-10.0, -3.0, -50.0, -1.0], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([-12.0, -2.0, -5.0, -1.0], dtype=torch.float64)
    ref_chosen = torch.tensor([-11.0, -3.5, -40.0, -1.0], dtype=torch.float64)
    ref_rejected = torch.tensor([-11.0, -2.5, -45.0, -1.0], dtype=torch.float64)
    beta = 0.1
    loss = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=beta)
    expected = []
    for c, r, rc, rr in zip(chosen.tolist(), rejected.tolist(), ref_chosen.tolist(), ref_rejected.tolist()):
        z = beta * ((c - rc) - (r - rr))
        expected.append(math.log1p(math.exp(-z)))  # -log sigmoid(z)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))
    assert loss[3].item() == pytest.approx(math.log(2))  # policy == reference: no preference yet
    loss.sum().backward()
    assert torch.all(chosen.grad < 0)  # raising the chosen log-prob lowers the loss


def test_dpo_loss_is_finite_for_extreme_margins():
    big = torch.tensor([1e4, -1e4])
    loss = dpo_loss(big, -big, torch.zeros(2), torch.zeros(2), beta=1.0)
    assert torch.isfinite(loss).all()
    assert loss[0].item() == 0.0 and loss[1].item() == pytest.approx(2e4)


def test_distillation_loss_rejects_bad_arguments():
    inputs = make_inputs(torch.float32)
    with pytest.raises(ValueError, match="beta"):
        distillation_loss(*inputs, beta=1.5)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(*inputs, temperature=0.0)
    with pytest.raises(ValueError, match="backend"):
        distillation_loss(*inputs, backend="fast")
    with pytest.raises(ValueError, match="mask"):
        distillation_loss(*inputs[:4], inputs[4][:, :3])
