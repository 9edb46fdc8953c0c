"""Benchmark: what a teacher server's answers cost the training side to parse, per prompt-logprob entry.

vLLM answers a teacher-forced request with k + 1 log-probs per completion token (the top-k and the actual token) as
JSON; the trainer parses it with TRL's `VLLMClient` and turns it into tensors. This times both on answers of the
stand-in server (`vtd_trl.demo.teacher_server`, the demo teacher, the same JSON shape as vLLM) and scales the result to
a run's size: `--completions` distilled completions of `--tokens` tokens per process and generation batch.

    python scripts/bench/server_parse.py --top-k 64
"""

import argparse
import json
import time

import torch
from trl.generation.vllm_client import VLLMClient

from vtd_trl.demo.teacher_server import load


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--sequences", type=int, default=16, help="sequences in the timed answer")
    parser.add_argument("--length", type=int, default=300, help="tokens per timed sequence")
    parser.add_argument("--completions", type=int, default=64, help="scale: distilled completions per process")
    parser.add_argument("--tokens", type=int, default=2048, help="scale: tokens per completion")
    args = parser.parse_args()

    server = load("vtd-demo/teacher", max_logprobs=args.top_k)
    sequence = [5 + i % 100 for i in range(args.length)]
    positions = server.prompt_logprobs(sequence, args.top_k)
    body = json.dumps({"choices": [{"index": i, "prompt_logprobs": positions} for i in range(args.sequences)]})
    entries = sum(len(p) for p in positions[1:]) * args.sequences
    start = time.perf_counter()
    choices = json.loads(body)["choices"]
    parsed = time.perf_counter()
    rows = [VLLMClient._format_sequence_logprobs(c, sequence, 1, args.top_k) for c in choices]
    formatted = time.perf_counter()
    for row in rows:
        torch.tensor(row["logprobs"]), torch.tensor(row["logprob_token_ids"], dtype=torch.int32)
    done = time.perf_counter()
    per_entry = {"json": parsed - start, "TRL format": formatted - parsed, "to tensors": done - formatted}
    scale = args.completions * args.tokens * (args.top_k + 1)
    print(f"k={args.top_k}: {entries:,} entries, {len(body) / entries:.0f} bytes each, torch threads "
          f"{torch.get_num_threads()}\n")  # fmt: skip
    print("| step | us per entry | at scale, s per process and generation batch |\n|---|---:|---:|")
    for name, seconds in [*per_entry.items(), ("total", done - start)]:
        print(f"| {name} | {seconds / entries * 1e6:.2f} | {seconds / entries * scale:.1f} |")
    print(f"\nscale: {args.completions} completions x {args.tokens} tokens x {args.top_k + 1} entries = "
          f"{scale:,} entries, {scale * len(body) / entries / 2**30:.2f} GiB of JSON")  # fmt: skip


if __name__ == "__main__":
    main()
