"""Benchmark: error of the DPO sequence log-probabilities when the LM head runs in bf16, against fp64.

VtD scores each DPO sequence with TRL's `ChunkedLogProbFunction`, which projects the hidden states onto the LM head
in `[tokens, vocab]` tiles of the hidden states' dtype: with a bf16 model the logits are rounded to bf16 before the
log-softmax. This measures what that costs on summed sequence log-probs, on the same bf16 hidden states and head:

- `bf16 tiles`: the kernel on the bf16 hidden states and head (what VtD did before);
- `fp32 tiles`: the kernel on the hidden states upcast to fp32 and the bf16 head, which it upcasts tile by tile
  (what VtD does).

Logits are drawn at the magnitude of a real LM's (top logits near `--top-logit`), targets sampled from the softmax,
so a target is usually one of the top tokens, as in a sampled completion.

    python scripts/bench/logprob_precision.py                 # about 2 minutes on 2 cores

Prints a Markdown table and writes JSON (`--output`).
"""

import argparse
import math

import torch
from _report import report
from trl.kernels import ChunkedLogProbFunction


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--length", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--top-logit", type=float, default=25.0)
    parser.add_argument("--extrapolate-to", type=int, default=2048, help="sequence length the errors are scaled to")
    parser.add_argument("--output", default="logprob_precision.json")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    n = args.sequences * args.length
    # logits ~ N(0, s^2) over the vocabulary: the largest of V draws is about s * sqrt(2 ln V)
    scale = args.top_logit / math.sqrt(2 * math.log(args.vocab))
    hidden = (torch.randn(n, args.hidden, generator=generator) * scale**0.5).bfloat16()
    weight = (torch.randn(args.vocab, args.hidden, generator=generator) * scale**0.5 / args.hidden**0.5).bfloat16()
    logits = hidden.double() @ weight.double().t()
    targets = torch.multinomial(logits.softmax(-1).float(), 1, generator=generator).squeeze(-1)
    exact = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    del logits

    def kernel(h, w):
        return ChunkedLogProbFunction.apply(h, w, None, targets, 1.0, 32768, None, 1.0, ("log_probs",))[0].double()

    rows = []
    T = args.extrapolate_to
    for name, (h, w) in {"bf16 tiles": (hidden, weight), "fp32 tiles": (hidden.float(), weight)}.items():
        error = kernel(h, w) - exact
        per_sequence = error.view(args.sequences, args.length).sum(1)
        # A sequence's error is a bias (the rounding inflates log Z), growing as its length, which cancels in DPO's
        # policy-minus-reference log-ratios, plus independent rounding noise, growing as its square root, which
        # does not once the policy has moved off the reference.
        rows.append(
            {
                "tiles": name,
                "token_abs_error": error.abs().mean().item(),
                "token_bias": error.mean().item(),
                "token_noise": error.std().item(),
                "sequence_abs_error": per_sequence.abs().mean().item(),
                "bias_at_length": error.mean().item() * T,
                "noise_at_length": error.std().item() * math.sqrt(T),
            }
        )
    columns = [
        ("tiles", "{tiles}"),
        ("token mean abs err", "{token_abs_error:.1e}"),
        ("token bias", "{token_bias:.1e}"),
        ("token noise (std)", "{token_noise:.1e}"),
        (f"sequence ({args.length} tok) mean abs err", "{sequence_abs_error:.3f}"),
        (f"{T}-token sequence: bias", "{bias_at_length:.3f}"),
        (f"{T}-token sequence: noise", "{noise_at_length:.3f}"),
    ]
    title = (
        f"\n{args.sequences} sequences x {args.length} tokens, vocab {args.vocab}, H {args.hidden}, top logits "
        f"~{args.top_logit}, mean target log-prob {exact.mean().item():.2f}\n"
    )
    report(rows, columns, args.output, title, data={"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
