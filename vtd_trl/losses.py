"""The VtD loss terms as pure functions: token-level distillation (dense, sparse, of a stored teacher signal) and
the contrast (DPO, length-normalised DPO, RPO).

`distillation_loss` takes hidden states and LM-head weights rather than logits, so that the fused backends never
hold the `[tokens, vocab]` logits of either model. All backends compute the same quantity: the sum over masked
tokens of the generalized JSD between the teacher's and the student's next-token distributions, divided by
`num_items`.
"""

import importlib
import math

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "trl", "chunked", "liger", "naive")
_MM_OUT_DTYPE = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 8)

# Working set of one token chunk of the `chunked` backend: about 8 fp32 [chunk, vocab] tensors live at once. A chunk
# stays within the budget and is at most 1/8 of the tokens (so its working set stays under a fifth of what the naive
# path holds at any length), but no smaller than 32 tokens, below which the GEMMs stop being efficient.
_CHUNK_BYTES = 1 << 30
_LIVE_TILES = 8
_MIN_CHUNKS = 8
_MIN_CHUNK_TOKENS = 32


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
) -> torch.Tensor:
    """Per-pair DPO sigmoid loss `-log sigmoid(beta * (chosen log-ratio - rejected log-ratio))`, shape `[P]`.

    The inputs are per-sequence summed log-probabilities of shape `[P]`; the caller normalises the result.
    """
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * logits)


def contrast_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    chosen_nll_weight: float = 0.0,
    chosen_nll_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair contrast losses `[P]`: DPO, length-normalised DPO, and RPO's chosen NLL.

    Args:
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps: `[P]` summed log-probabilities of each
            pair's sequences under the policy and the reference.
        chosen_lengths, rejected_lengths: `[P]` token counts of those sequences (at least 1).
        beta: the DPO temperature.
        loss_type: `"sigmoid"` (`dpo_loss` of the summed log-probs) or `"length_normalized"` (each sequence's
            log-ratio divided by its token count).
        chosen_nll_weight: `w` of RPO (TRL's `rpo_alpha`): `+ w * NLL(chosen) / len(chosen)` in each pair.
        chosen_nll_mask: `[P]` 1.0 for the pairs whose chosen sequence gets the NLL (default all).

    Returns:
        `(losses, margins, nll)`, each `[P]`: the differentiable losses; the detached DPO margins
        `beta * (chosen log-ratio - rejected log-ratio)`; the detached per-token NLL of each chosen sequence that
        gets it (0 elsewhere, and everywhere when `chosen_nll_weight` is 0).
    """
    chosen, rejected, ref_chosen, ref_rejected = chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps
    if loss_type == "length_normalized":
        chosen, ref_chosen = chosen / chosen_lengths, ref_chosen / chosen_lengths
        rejected, ref_rejected = rejected / rejected_lengths, ref_rejected / rejected_lengths
    losses = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=beta)
    nll = torch.zeros_like(losses).detach()
    if chosen_nll_weight > 0:
        mask = torch.ones_like(losses) if chosen_nll_mask is None else chosen_nll_mask.to(losses.dtype)
        weighted = mask * (-chosen_logps / chosen_lengths)
        losses = losses + chosen_nll_weight * weighted
        nll = weighted.detach()
    margins = beta * ((chosen - ref_chosen) - (rejected - ref_rejected)).detach()
    return losses, margins, nll


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend `backend` stands for on `device`: `auto` is TRL's chunked kernel on CUDA, `chunked` elsewhere.

    Measured (docs/performance.md): on one H200 TRL's kernel took 126 ms for the forward + backward of 16,384 tokens
    at Qwen3's vocabulary in bf16, Liger's 177 ms and `chunked` 205 ms; on a 2-core x86 CPU `chunked` took 0.43 to 0.86x
    the time of TRL's kernel, with half its memory.
    """
    if backend not in BACKENDS:
        raise ValueError(f"Unknown distillation backend {backend!r}; expected one of {list(BACKENDS)}.")
    if backend != "auto":
        return backend
    return "trl" if device.type == "cuda" else "chunked"


def distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float = 0.0,
    temperature: float = 1.0,
    backend: str = "auto",
    num_items: torch.Tensor | int | None = None,
    chunk_size: int | None = None,
    entropy_gap: float = 0.0,
) -> torch.Tensor:
    """Sum over masked tokens of `JSD_beta(p_teacher, p_student)`, divided by `num_items`.

    Args:
        student_hidden: `[..., H_s]` student hidden states (before the LM head), aligned with the predicted tokens.
        student_weight: `[V_s, H_s]` student LM-head weight.
        teacher_hidden: `[..., H_t]` teacher hidden states at the same positions.
        teacher_weight: `[V_t, H_t]` teacher LM-head weight. When the two heads differ in size (one padded), both
            are cut to the smaller one.
        mask: boolean `[...]`, the tokens that count.
        beta: `0.0` forward KL(teacher || student), `1.0` reverse KL(student || teacher), else the generalized JSD
            with mixture `beta * p_teacher + (1 - beta) * p_student` (TRL's `generalized_jsd_loss` convention).
        temperature: divides both models' logits.
        backend: `"trl"`, `"chunked"`, `"liger"`, `"naive"` or `"auto"` (see `resolve_backend`).
        num_items: the normaliser; `None` means `mask.sum()`.
        chunk_size: tokens per chunk for `chunked` (default: `chunk_tokens(tokens, vocab)`).
        entropy_gap: `a` of the token weights `2 * sigmoid(a * (H_student - H_teacher))`, the entropies of both
            tempered distributions at that token, held constant in the gradient: a token where the student is less
            sure than the teacher weighs up to 2, one where it is surer down to 0; `0.0` weighs every token 1.
            `naive` and `chunked` only (`auto` is then `chunked`).

    Returns:
        A scalar. With an empty mask it is an exact zero that still depends on `student_hidden` (zero gradient).
    """
    _check_divergence_options(beta, temperature)
    if entropy_gap and backend not in ("auto", "naive", "chunked"):
        raise ValueError(
            f"`entropy_gap={entropy_gap}` weighs tokens inside the 'naive' and 'chunked' backends only, got backend "
            f"{backend!r}. Use backend 'chunked'."
        )
    mask = mask.bool()
    if mask.shape != student_hidden.shape[:-1] or mask.shape != teacher_hidden.shape[:-1]:
        raise ValueError(
            f"`mask` {tuple(mask.shape)} must match the leading dimensions of the student "
            f"{tuple(student_hidden.shape[:-1])} and teacher {tuple(teacher_hidden.shape[:-1])} hidden states."
        )
    h_s, h_t = student_hidden[mask], teacher_hidden[mask]
    if num_items is None:
        num_items = h_s.shape[0]
    if h_s.shape[0] == 0:
        return student_hidden.reshape(-1)[:0].sum()
    vocab = min(student_weight.shape[0], teacher_weight.shape[0])
    # Under mixed precision the heads are fp32 masters while the hidden states are bf16: project in the hidden
    # states' dtype, as autocast would (the cast is differentiable, so the fp32 master still gets its gradient).
    w_s, w_t = _cut(student_weight, vocab).to(h_s.dtype), _cut(teacher_weight, vocab).to(h_t.dtype)
    backend = "chunked" if entropy_gap and backend == "auto" else resolve_backend(backend, h_s.device)
    if backend == "naive":
        total = _naive_divergence(h_s, w_s, h_t, w_t, beta, temperature, entropy_gap)
    elif backend == "chunked":
        chunk_size = chunk_size or chunk_tokens(h_s.shape[0], vocab)
        total = _ChunkedDivergence.apply(h_s, w_s, h_t, w_t, beta, temperature, chunk_size, entropy_gap)
    elif backend == "trl":
        heads_status = [getattr(weight, "ds_status", None) for weight in (student_weight, teacher_weight)]
        total = _TRLDivergence.apply(h_s, w_s, h_t, w_t, beta, temperature, heads_status)
    else:
        total = _liger_divergence(h_s, w_s, h_t, w_t, beta, temperature)
    return total / num_items


def _cut(weight: torch.Tensor, vocab: int) -> torch.Tensor:
    # The first `vocab` rows; the weight itself when it has no more (a ZeRO-3 parameter stays one).
    return weight if weight.shape[0] == vocab else weight[:vocab]


def signal_distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    signal: dict[str, torch.Tensor],
    teacher_weight: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    beta: float = 0.0,
    temperature: float = 1.0,
    backend: str = "auto",
    vocab_size: int | None = None,
    num_items: torch.Tensor | int | None = None,
    entropy_gap: float = 0.0,
) -> torch.Tensor:
    """`distillation_loss` or `sparse_distillation_loss` of `[n, L, H]` student hidden states against a teacher's
    stored signal (`vtd_trl.teachers`): its `hidden` states (with `teacher_weight`, the teacher's LM head) or its
    `topk_logprobs` and `topk_ids`. The signal may be narrower or wider than `L`: beyond either, all is padding."""
    width = min(student_hidden.shape[1], next(iter(signal.values())).shape[1])
    hidden, mask = student_hidden[:, :width], mask[:, :width]
    options = dict(beta=beta, temperature=temperature, num_items=num_items)
    if "hidden" in signal:
        teacher_hidden = signal["hidden"][:, :width]
        return distillation_loss(
            hidden,
            student_weight,
            teacher_hidden,
            teacher_weight,
            mask,
            backend=backend,
            entropy_gap=entropy_gap,
            **options,
        )
    if entropy_gap:
        raise ValueError(f"`entropy_gap={entropy_gap}` needs the teacher's whole distribution, not its top-k.")
    vocab = min(student_weight.shape[0], vocab_size or student_weight.shape[0])
    logprobs, ids = signal["topk_logprobs"][:, :width], signal["topk_ids"][:, :width]
    return sparse_distillation_loss(hidden, student_weight, logprobs, ids, mask, vocab_size=vocab, **options)


def chunk_tokens(num_tokens: int, vocab: int) -> int:
    """Tokens per chunk of the `chunked` backend: 1/8 of the work, at least 32, within a 1 GiB working set."""
    budget = max(1, _CHUNK_BYTES // (_LIVE_TILES * 4 * vocab))
    return min(budget, max(_MIN_CHUNK_TOKENS, -(-num_tokens // _MIN_CHUNKS)))


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-row `JSD_beta(softmax(teacher), softmax(student))` of `[N, V]` logits, shape `[N]` (differentiable)."""
    log_ps = student_logits.log_softmax(-1)
    log_pt = teacher_logits.log_softmax(-1)
    return _jsd(log_ps, log_ps.exp(), log_pt, log_pt.exp(), beta)[0]


def _jsd(log_ps, ps, log_pt, pt, beta: float):
    """The one formula of every divergence here: per-row `JSD_beta` from both sides' log-probabilities and
    probabilities over the last dimension, with, for a mixture (`0 < beta < 1`), its `log_m` and `KL(student || m)`
    (the gradient needs them; None otherwise). `beta` 0 is forward KL(teacher || student), 1 reverse KL."""
    if beta == 0.0:
        return (pt * (log_pt - log_ps)).sum(-1), None, None
    if beta == 1.0:
        return (ps * (log_ps - log_pt)).sum(-1), None, None
    log_m = torch.logaddexp(log_ps + math.log1p(-beta), log_pt + math.log(beta))
    kl_student = (ps * (log_ps - log_m)).sum(-1)
    kl_teacher = (pt * (log_pt - log_m)).sum(-1)
    return beta * kl_teacher + (1.0 - beta) * kl_student, log_m, kl_student


def _naive_divergence(h_s, w_s, h_t, w_t, beta, temperature, entropy_gap=0.0):
    # The plain formula on full logits, through autograd: the reference the fused backends are tested against.
    student_logits = (h_s @ w_s.t()).float() / temperature
    teacher_logits = (h_t @ w_t.t()).float().detach() / temperature
    divergence = generalized_jsd(student_logits, teacher_logits, beta)
    if entropy_gap:
        divergence = divergence * entropy_gap_weights(student_logits.detach(), teacher_logits, entropy_gap)
    return divergence.sum()


def entropy_gap_weights(student_logits: torch.Tensor, teacher_logits: torch.Tensor, a: float) -> torch.Tensor:
    """Per-row token weights `2 * sigmoid(a * (H(softmax(student)) - H(softmax(teacher))))` of `[N, V]` logits."""
    return 2.0 * torch.sigmoid(
        a * (_entropy(student_logits.log_softmax(-1)) - _entropy(teacher_logits.log_softmax(-1)))
    )


def _entropy(log_p: torch.Tensor) -> torch.Tensor:
    return -(log_p.exp() * log_p).sum(-1)


def _low_precision_cuda(x: torch.Tensor) -> bool:
    # `torch.mm(..., out_dtype=)` (fp32 output of a bf16 GEMM) exists from torch 2.8 on CUDA
    return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and _MM_OUT_DTYPE


def _project(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # Logits in fp32 without rounding them to a low-precision dtype first (that bias is visible in the JSD).
    if _low_precision_cuda(hidden) and weight.dtype == hidden.dtype:
        return torch.mm(hidden, weight.t(), out_dtype=torch.float32)
    return hidden.float() @ weight.float().t()


def _divergence_and_grad(zs: torch.Tensor, zt: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row JSD of fp32 tempered logits and its gradient with respect to the student's tempered logits."""
    log_ps = zs.log_softmax(-1)
    log_pt = zt.log_softmax(-1)
    ps, pt = log_ps.exp(), log_pt.exp()
    loss, log_m, kl_student = _jsd(log_ps, ps, log_pt, pt, beta)
    if beta == 0.0:
        return loss, ps - pt
    if beta == 1.0:
        return loss, ps * (log_ps - log_pt - loss.unsqueeze(-1))
    return loss, (1.0 - beta) * ps * (log_ps - log_m - kl_student.unsqueeze(-1))


class _GradsInForward(torch.autograd.Function):
    """Base of the chunked losses: the gradients are computed in the forward pass and only rescaled here."""

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        grad_h = None if grad_h is None else (grad_h * grad_output).to(h_dtype)
        grad_w = None if grad_w is None else (grad_w * grad_output).to(w_dtype)
        return grad_h, grad_w, *[None] * (len(ctx.needs_input_grad) - 2)


def _chunked_with_grads(ctx, h_s, w_s, temperature, chunk_size, loss_and_grad) -> torch.Tensor:
    """The summed loss over token chunks of the student's logits `zs = h_s @ w_s.T / temperature`, and its gradients
    wrt `h_s` and `w_s`, saved on `ctx`. `loss_and_grad(chunk, zs)` returns a chunk's summed loss and d loss / d zs."""
    low_precision_cuda = _low_precision_cuda(h_s)
    total = torch.zeros((), device=h_s.device, dtype=torch.float32)
    grad_h = torch.empty(h_s.shape, device=h_s.device, dtype=torch.float32) if h_s.requires_grad else None
    grad_w = torch.zeros(w_s.shape, device=w_s.device, dtype=torch.float32) if w_s.requires_grad else None
    for start in range(0, h_s.shape[0], chunk_size):
        chunk = slice(start, start + chunk_size)
        zs = _project(h_s[chunk], w_s).div_(temperature)
        loss, grad = loss_and_grad(chunk, zs)
        del zs
        total += loss
        grad = grad.div_(temperature)
        # On CUDA the gradient GEMMs run in the inputs' dtype with fp32 accumulation, as in Liger and TRL.
        grad = grad.to(h_s.dtype) if low_precision_cuda else grad
        if grad_h is not None:
            grad_h[chunk] = _mm_fp32(grad, w_s)
        if grad_w is not None:
            grad_w += _mm_fp32(grad.t(), h_s[chunk])
    ctx.save_for_backward(grad_h, grad_w)
    ctx.dtypes = h_s.dtype, w_s.dtype
    return total


class _ChunkedDivergence(_GradsInForward):
    """Summed JSD over token chunks, with the gradients computed in the forward pass.

    Each chunk projects both models once, so a step costs four GEMMs per token (two projections, the two student
    gradients), and only one `[chunk, vocab]` working set exists at a time. The backward only rescales the stored
    gradients, which also makes the function safe under ZeRO-3: the LM heads need to be gathered during the forward
    call alone.
    """

    @staticmethod
    def forward(ctx, h_s, w_s, h_t, w_t, beta, temperature, chunk_size, entropy_gap=0.0):
        def loss_and_grad(chunk, zs):
            zt = _project(h_t[chunk], w_t).div_(temperature)
            loss, grad = _divergence_and_grad(zs, zt, beta)
            if entropy_gap:  # constant weights: d (w * D) / d zs = w * d D / d zs
                weights = entropy_gap_weights(zs, zt, entropy_gap)
                loss, grad = loss * weights, grad.mul_(weights.unsqueeze(-1))
            return loss.sum(), grad

        return _chunked_with_grads(ctx, h_s, w_s, temperature, chunk_size, loss_and_grad)


class _TRLDivergence(_GradsInForward):
    """Summed JSD by TRL's `ChunkedDivergenceFunction` (the kernel of TRL's `DistillationTrainer`: Triton on CUDA,
    torch tiles elsewhere), its forward and its backward both run in this forward call.

    TRL's own backward projects both heads again and enters `maybe_gather_lm_head_ctx` for them: under ZeRO-3, an
    all-gather in the backward pass that only the processes that distilled would enter (the trainer distils where a
    process has distilled rows). Run here, both passes use the heads the caller gathered, and the backward only
    rescales, as with `chunked` and `liger`. The work is the same: two projections in the forward, two more and the
    two gradient GEMMs in the backward.
    """

    @staticmethod
    def forward(ctx, h_s, w_s, h_t, w_t, beta, temperature, heads_status):
        from trl.kernels.chunked_divergence import ChunkedDivergenceFunction

        with torch.enable_grad():
            h_s_leaf = h_s.detach().requires_grad_(h_s.requires_grad)
            w_s_leaf = w_s.detach().requires_grad_(w_s.requires_grad)
            heads = [w_s_leaf, w_t.detach()]
            # Under ZeRO-3 TRL's kernel reads the `ds_status` of the heads it is given to gather them itself. They
            # are gathered (the caller's contract) but cut, cast or detached here: each carries its parameter's.
            for head, status in zip(heads, heads_status):
                if status is not None:
                    head.ds_status = status
            divergence, _ = ChunkedDivergenceFunction.apply(
                h_s_leaf, heads[0], None, h_t.detach(), heads[1], None, beta, temperature
            )
            total = divergence.sum()
            wanted = [x for x in (h_s_leaf, w_s_leaf) if x.requires_grad]
            grads = iter(torch.autograd.grad(total, wanted)) if wanted else iter(())
        grad_h = next(grads) if h_s.requires_grad else None
        grad_w = next(grads) if w_s.requires_grad else None
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = h_s.dtype, w_s.dtype
        return total.detach()


def _mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if _low_precision_cuda(a):
        return torch.mm(a, b.to(a.dtype), out_dtype=torch.float32)
    return a.float() @ b.float()


def check_backend(backend: str, device: torch.device) -> None:
    """Raise now, not at the first loss, when `backend` cannot run on `device`: an unknown name, or `liger` without
    Liger (or, on CUDA, without its Triton kernel). `trl` and `chunked` run wherever torch does (TRL's kernel uses
    Triton when it imports, torch tiles otherwise)."""
    if resolve_backend(backend, device) != "liger":
        return
    # The kernel `_liger_divergence` calls on `device`: the Triton one on CUDA (it imports triton), else torch's.
    module = "liger_kernel.ops.fused_linear_jsd" if device.type == "cuda" else "liger_kernel.chunked_loss.jsd_loss"
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"The 'liger' distillation backend needs {module} on {device.type}, which fails to import ({error}). "
            "Install it with `pip install liger-kernel` (and Triton on CUDA), or use backend 'chunked'."
        ) from error


def _liger_divergence(h_s, w_s, h_t, w_t, beta, temperature):
    """Liger's fused linear JSD: its Triton kernel on CUDA, its chunked torch implementation elsewhere.

    Both return the mean over the rows they are given (all valid here), so the sum is the mean times the row count.
    On CUDA Liger (0.8.5) dispatches the inner JSD to CuTe DSL (`cutlass.cute`, package `nvidia-cutlass-dsl`, sm_90+)
    or cuTile (`cuda.tile`, package `cuda-tile`) when one imports, to Triton otherwise; either way it projects in
    token chunks of `BT / ceil(V / H)` rows before Blackwell (32 rows for 2,048 tokens at Qwen3-1.7B's shapes).
    """
    check_backend("liger", h_s.device)
    n = h_s.shape[0]
    if h_s.is_cuda:
        from liger_kernel.ops.fused_linear_jsd import LigerFusedLinearJSDFunction

        accum_dtype = torch.float32 if w_s.dtype in (torch.float16, torch.bfloat16) else None
        mean = LigerFusedLinearJSDFunction.apply(h_s, w_s, h_t, w_t, None, beta, -100, temperature, accum_dtype)
    else:
        from liger_kernel.chunked_loss.jsd_loss import LigerFusedLinearJSDFunction

        labels = torch.zeros(n, dtype=torch.long, device=h_s.device)
        # weight_hard_loss=0 and weight_soft_loss=1 keep only the JSD; no torch.compile off CUDA; 256-token chunks
        # (its default, 1024, keeps several [1024, vocab] tensors alive at once).
        mean = LigerFusedLinearJSDFunction.apply(
            h_s, w_s, h_t, w_t, labels, None, None, 0.0, 1.0, beta, -100, temperature, False, 256
        )
    return mean * n


# A tail bucket never holds less than this mass: TRL's `_add_tail_bucket` clamps the top-k log-mass at -1e-7, which
# keeps the reverse-KL tail term finite when the teacher's top-k sums to 1 in floating point.
_TAIL_FLOOR = 1e-7


def sparse_distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    teacher_topk_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float = 0.0,
    temperature: float = 1.0,
    num_items: torch.Tensor | int | None = None,
    vocab_size: int | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Sum over masked tokens of `JSD_beta` over the teacher's top-k tokens plus a tail bucket, divided by `num_items`.

    The estimator (TRL's server and async distillation trainers, `loss_add_tail=True`, at every `beta`): at each token
    let `S` be the teacher's reported top-k ids (slots whose log-prob is `-inf` are padding and left out). Both
    distributions are coarse-grained to `|S| + 1` buckets, the tokens of `S` and one tail bucket:
    `P = (p_t(i) for i in S, P_tail)` and `Q = (p_s(i) for i in S, Q_tail)`, with `p_s = softmax(z_s / temperature)`
    exact over the student's full vocabulary and `P_tail = max(1 - sum_S p_t, 1e-7)`, `Q_tail = max(1 - sum_S p_s,
    1e-7)` (TRL's clamp). The token's loss is then
    - `beta = 0`: forward `KL(P || Q) = sum_b P_b (log P_b - log Q_b)`,
    - `beta = 1`: reverse `KL(Q || P)`,
    - else `beta KL(P || M) + (1 - beta) KL(Q || M)` with `M = beta P + (1 - beta) Q`,
    the same conventions as `distillation_loss`. By the data-processing inequality it underestimates the dense
    divergence (up to the 1e-7 floor), and equals it when `S` is the whole vocabulary. The gradient reaches every
    student logit (through the softmax and the tail), not only those of `S`.

    Args:
        student_hidden: `[..., H]` student hidden states (before the LM head), aligned with the predicted tokens.
        student_weight: `[V, H]` student LM-head weight.
        teacher_topk_logprobs: `[..., k]` the teacher's log-probabilities at `teacher_topk_ids`, of its distribution
            at `temperature` (`log_softmax(z_t / temperature)`, what a vLLM server returns for a request at that
            temperature with `--logprobs-mode processed_logprobs`, and what `topk_logprobs` computes); `-inf` marks
            a padding slot.
        teacher_topk_ids: `[..., k]` integer token ids, distinct within a token, in `[0, vocab_size)`, except in
            padding slots (any value there).
        mask: boolean `[...]`, the tokens that count; each needs at least one finite teacher log-prob.
        beta: `0.0` forward KL(teacher || student), `1.0` reverse KL(student || teacher), else the generalized JSD.
        temperature: divides the student's logits (the teacher's log-probs come tempered).
        num_items: the normaliser; `None` means `mask.sum()`.
        vocab_size: rows of `student_weight` that are the vocabulary (the teacher's, when one head is padded larger,
            as `distillation_loss` cuts both heads to the smaller); default all.
        chunk_size: tokens per chunk (default: `chunk_tokens(tokens, vocab)`).

    Returns:
        A scalar. With an empty mask it is an exact zero that still depends on `student_hidden` (zero gradient).
    """
    if student_weight.dim() != 2 or student_weight.shape[1] != student_hidden.shape[-1]:
        raise ValueError(
            f"`student_weight` {tuple(student_weight.shape)} must be [vocab, {student_hidden.shape[-1]}] "
            "(the hidden size of `student_hidden`)."
        )
    vocab = student_weight.shape[0] if vocab_size is None else vocab_size
    if not 0 < vocab <= student_weight.shape[0]:
        raise ValueError(f"`vocab_size` must be in [1, {student_weight.shape[0]}], got {vocab_size}.")
    h_s, log_pt, ids = _masked_topk_inputs(
        student_hidden, "student_hidden", teacher_topk_logprobs, teacher_topk_ids, mask, vocab, beta, temperature
    )
    if h_s.shape[0] == 0:
        return student_hidden.reshape(-1)[:0].sum()
    num_items = h_s.shape[0] if num_items is None else num_items
    w_s = student_weight[:vocab].to(h_s.dtype)
    chunk_size = chunk_size or chunk_tokens(h_s.shape[0], vocab)
    return _SparseChunkedDivergence.apply(h_s, w_s, log_pt, ids, beta, temperature, chunk_size) / num_items


def sparse_distillation_loss_from_logits(
    student_logits: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    teacher_topk_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float = 0.0,
    temperature: float = 1.0,
    num_items: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """`sparse_distillation_loss` from the student's `[..., V]` logits (through autograd, unchunked)."""
    vocab = student_logits.shape[-1]
    z_s, log_pt, ids = _masked_topk_inputs(
        student_logits, "student_logits", teacher_topk_logprobs, teacher_topk_ids, mask, vocab, beta, temperature
    )
    if z_s.shape[0] == 0:
        return student_logits.reshape(-1)[:0].sum()
    num_items = z_s.shape[0] if num_items is None else num_items
    return sparse_jsd(z_s.float() / temperature, log_pt, ids, beta).sum() / num_items


@torch.no_grad()
def topk_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    k: int,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A local teacher's top-k `log_softmax(z / temperature)` and their ids, `[..., k]` each, in token chunks.

    The input `sparse_distillation_loss` takes, so that a colocated teacher can be compared with a server teacher at
    equal k. Sorted by descending probability, as vLLM returns them.
    """
    if not 1 <= k <= weight.shape[0]:
        raise ValueError(f"`k` must be in [1, {weight.shape[0]}] (the vocabulary of `weight`), got {k}.")
    if not temperature > 0.0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    flat = hidden.reshape(-1, hidden.shape[-1])
    values = torch.empty(flat.shape[0], k, device=hidden.device, dtype=torch.float32)
    ids = torch.empty(flat.shape[0], k, device=hidden.device, dtype=torch.long)
    chunk_size = chunk_size or chunk_tokens(flat.shape[0], weight.shape[0])
    for start in range(0, flat.shape[0], chunk_size):
        chunk = slice(start, start + chunk_size)
        log_p = _project(flat[chunk], weight.to(flat.dtype)).div_(temperature).log_softmax(-1)
        values[chunk], ids[chunk] = log_p.topk(k, dim=-1)
    return values.reshape(*hidden.shape[:-1], k), ids.reshape(*hidden.shape[:-1], k)


def sparse_jsd(
    student_logits: torch.Tensor, teacher_topk_logprobs: torch.Tensor, teacher_topk_ids: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-row `JSD_beta` over top-k + tail buckets (see `sparse_distillation_loss`) of `[N, V]` tempered student
    logits against `[N, k]` teacher log-probs and ids, shape `[N]` (differentiable in the student's logits)."""
    valid = teacher_topk_logprobs > float("-inf")
    log_ps = student_logits.log_softmax(-1).gather(-1, teacher_topk_ids.long().where(valid, 0))
    # Padding buckets have probability 0 and log-probability 0 on both sides, so they add exactly 0 (and no NaN).
    return _jsd(*_tail_buckets(log_ps, valid), *_tail_buckets(teacher_topk_logprobs, valid), beta)[0]


def _tail_buckets(log_p: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # [N, k] top-k log-probs -> [N, k + 1] log-probs and probabilities with the tail bucket last (TRL's
    # `_add_tail_bucket`); padding slots get log-prob 0 and probability 0.
    log_sum = log_p.masked_fill(~valid, float("-inf")).logsumexp(-1, keepdim=True)
    tail = torch.log(-torch.expm1(log_sum.clamp(max=math.log1p(-_TAIL_FLOOR))))
    log_p = torch.cat([log_p.masked_fill(~valid, 0.0), tail], dim=-1)
    probs = torch.cat([log_p[..., :-1].exp().masked_fill(~valid, 0.0), tail.exp()], dim=-1)
    return log_p, probs


class _SparseChunkedDivergence(_GradsInForward):
    """Summed `sparse_jsd` over token chunks, with the gradients computed in the forward pass.

    Own function rather than `torch.utils.checkpoint`: as `_ChunkedDivergence`, the LM head is used during the forward
    call alone (ZeRO-3 needs it gathered only there) and a token costs three GEMMs, not four. Within a chunk autograd
    differentiates the `[chunk, vocab]` logits, so the gradient is exactly that of `sparse_jsd`.
    """

    @staticmethod
    def forward(ctx, h_s, w_s, log_pt, ids, beta, temperature, chunk_size):
        def loss_and_grad(chunk, zs):
            with torch.enable_grad():
                zs = zs.requires_grad_()
                loss = sparse_jsd(zs, log_pt[chunk], ids[chunk], beta).sum()
                (grad,) = torch.autograd.grad(loss, zs)
            return loss.detach(), grad

        return _chunked_with_grads(ctx, h_s, w_s, temperature, chunk_size, loss_and_grad)


def _check_divergence_options(beta: float, temperature: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"`beta` must be in [0, 1], got {beta}.")
    if not temperature > 0.0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")


def _masked_topk_inputs(student, name, logprobs, ids, mask, vocab, beta, temperature):
    """The checked masked rows of `student` (`[..., D]` hidden states or logits, named `name` in errors) and of the
    teacher's top-k log-probs (float32) and ids; the last two are None when the mask selects nothing."""
    _check_divergence_options(beta, temperature)
    mask = mask.bool()
    if mask.shape != student.shape[:-1]:
        raise ValueError(
            f"`mask` {tuple(mask.shape)} must match the leading dimensions of `{name}` {tuple(student.shape[:-1])}."
        )
    _check_topk_shapes(logprobs, ids, mask)
    rows = student[mask]
    if rows.shape[0] == 0:
        return rows, None, None
    logprobs, ids = logprobs[mask].float(), ids[mask]
    _check_topk_values(logprobs, ids, vocab)
    return rows, logprobs, ids


def _check_topk_shapes(logprobs: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> None:
    if logprobs.shape != ids.shape or logprobs.shape[:-1] != mask.shape or logprobs.shape[-1] < 1:
        raise ValueError(
            f"`teacher_topk_logprobs` {tuple(logprobs.shape)} and `teacher_topk_ids` {tuple(ids.shape)} must both be "
            f"{tuple(mask.shape)} + (k,) with k >= 1 (the shape of `mask` plus the top-k dimension)."
        )
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"`teacher_topk_ids` must be an integer tensor, got {ids.dtype}.")
    if not logprobs.dtype.is_floating_point:
        raise ValueError(f"`teacher_topk_logprobs` must be a floating-point tensor, got {logprobs.dtype}.")


def _check_topk_values(log_pt: torch.Tensor, ids: torch.Tensor, vocab: int) -> None:
    # Masked tokens only; one host sync for all the checks.
    valid = log_pt > float("-inf")
    bad_ids = valid & ((ids < 0) | (ids >= vocab))
    sorted_ids = torch.where(valid, ids, -1 - torch.arange(ids.shape[-1], device=ids.device)).sort(-1).values
    duplicates = (sorted_ids[:, 1:] == sorted_ids[:, :-1]).any(-1)
    mass = log_pt.logsumexp(-1)
    not_finite, bad, repeated, empty, above_one = torch.stack(
        [
            (log_pt.isnan() | (log_pt == float("inf"))).any(),
            bad_ids.any(),
            duplicates.any(),
            (~valid.any(-1)).any(),
            (mass > 1e-3).any(),
        ]
    ).tolist()
    if not_finite:
        raise ValueError("`teacher_topk_logprobs` contains NaN or +inf.")
    if bad:
        raise ValueError(
            f"`teacher_topk_ids` must be in [0, {vocab}) (the student's vocabulary), got {ids[bad_ids][0].item()}."
        )
    if repeated:
        raise ValueError("`teacher_topk_ids` repeats a token id within a token's top-k (outside padding slots).")
    if empty:
        raise ValueError(
            f"`teacher_topk_logprobs` has no finite entry at {int((~valid.any(-1)).sum())} masked tokens: every "
            "token in `mask` needs the teacher's signal."
        )
    if above_one:
        raise ValueError(
            "`teacher_topk_logprobs` must be log-probabilities (their probabilities sum to at most 1 per token), got "
            f"a sum of {mass.max().exp().item():.4g}: pass `log_softmax(logits / temperature)`, not logits."
        )
