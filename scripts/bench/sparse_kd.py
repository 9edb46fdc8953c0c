"""Benchmark: error of the sparse (top-k + tail bucket) distillation loss against the dense one, per k and divergence.

The demo models' vocabulary is too small for top-k to matter, so the distributions are synthetic, at Qwen3's
vocabulary: each token's teacher logits follow a Zipf law `-s * log(rank)` over a random permutation of the
vocabulary, plus Gaussian noise; most tokens are peaked (large `s`), some open (small `s`, a heavy tail), as in a
reasoning trace. The student is the teacher flattened (`/ 1.15`) with its own noise on every logit. Errors are of the
summed loss and of its gradient in the student's logits, both against the dense loss on the same fp32 logits.

    python scripts/bench/sparse_kd.py                  # 256 tokens at vocabulary 151,936: about 20 s on 2 cores

Prints a Markdown table and writes it as JSON (`--output`).
"""

import argparse

import torch
from _report import report

from vtd_trl.losses import generalized_jsd, sparse_distillation_loss_from_logits

DIVERGENCES = {"forward KL": 0.0, "JSD (beta 0.5)": 0.5, "reverse KL": 1.0}


def make_logits(tokens: int, vocab: int, peaked_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    peaked = torch.rand(tokens, 1, generator=generator) < peaked_fraction
    low, high = torch.where(peaked, 2.5, 1.3), torch.where(peaked, 4.0, 1.8)
    exponent = low + (high - low) * torch.rand(tokens, 1, generator=generator)
    by_rank = -exponent * torch.arange(1, vocab + 1).log()
    teacher = torch.empty(tokens, vocab)
    for row in range(tokens):
        teacher[row, torch.randperm(vocab, generator=generator)] = by_rank[row]
    teacher += 0.5 * torch.randn(tokens, vocab, generator=generator)
    student = teacher / 1.15 + 0.7 * torch.randn(tokens, vocab, generator=generator)
    return student, teacher


def measure(student: torch.Tensor, teacher: torch.Tensor, ks: list[int], chunk: int) -> tuple[dict, list[dict]]:
    log_pt = teacher.log_softmax(-1)
    top_log_pt, top_ids = log_pt.topk(max(ks), dim=-1)
    stats = {
        "teacher_entropy_nats": -(log_pt.exp() * log_pt).sum(-1).mean().item(),
        "teacher_top1_prob": top_log_pt[:, 0].exp().mean().item(),
        "student_entropy_nats": -(student.softmax(-1) * student.log_softmax(-1)).sum(-1).mean().item(),
    }
    rows = []
    for name, beta in DIVERGENCES.items():
        dense_grad = torch.empty_like(student)
        dense = 0.0
        for start in range(0, student.shape[0], chunk):
            z = student[start : start + chunk].clone().requires_grad_()
            loss = generalized_jsd(z, teacher[start : start + chunk], beta).sum()
            (dense_grad[start : start + chunk],) = torch.autograd.grad(loss, z)
            dense += loss.item()
        for k in ks:
            sparse_grad = torch.empty_like(student)
            sparse = 0.0
            for start in range(0, student.shape[0], chunk):
                z = student[start : start + chunk].clone().requires_grad_()
                rows_k = slice(start, start + chunk)
                mask = torch.ones(z.shape[0], dtype=torch.bool)
                loss = sparse_distillation_loss_from_logits(
                    z, top_log_pt[rows_k, :k], top_ids[rows_k, :k], mask, beta=beta, num_items=1
                )
                (sparse_grad[start : start + chunk],) = torch.autograd.grad(loss, z)
                sparse += loss.item()
            rows.append(
                {
                    "divergence": name,
                    "beta": beta,
                    "k": k,
                    "teacher_tail_mass": 1.0 - top_log_pt[:, :k].exp().sum(-1).mean().item(),
                    "dense_loss_per_token": dense / student.shape[0],
                    "sparse_loss_per_token": sparse / student.shape[0],
                    "loss_rel_err": (sparse - dense) / dense,
                    "grad_rel_err": ((sparse_grad - dense_grad).norm() / dense_grad.norm()).item(),
                    "grad_cosine": torch.nn.functional.cosine_similarity(
                        sparse_grad.flatten(), dense_grad.flatten(), dim=0
                    ).item(),
                }
            )
    return stats, rows


COLUMNS = [
    ("divergence", "{divergence}"),
    ("k", "{k}"),
    ("teacher mass outside top-k", "{teacher_tail_mass:.3f}"),
    ("dense / token", "{dense_loss_per_token:.4f}"),
    ("sparse / token", "{sparse_loss_per_token:.4f}"),
    ("loss rel. err", "{loss_rel_err:+.2e}"),
    ("grad rel. err", "{grad_rel_err:.2e}"),
    ("grad cosine", "{grad_cosine:.4f}"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--peaked-fraction", type=float, default=0.7)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 8, 64, 512])
    parser.add_argument("--chunk", type=int, default=32, help="tokens per chunk (bounds the memory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="sparse_kd_bench.json")
    args = parser.parse_args()

    student, teacher = make_logits(args.tokens, args.vocab, args.peaked_fraction, args.seed)
    stats, rows = measure(student, teacher, args.ks, args.chunk)
    report(rows, COLUMNS, args.output, data={"args": vars(args), "stats": stats, "rows": rows})
    print(
        f"\n{args.tokens} tokens, vocabulary {args.vocab}: teacher entropy {stats['teacher_entropy_nats']:.2f} nats, "
        f"top-1 probability {stats['teacher_top1_prob']:.2f}; student entropy {stats['student_entropy_nats']:.2f} nats"
    )


if __name__ == "__main__":
    main()
