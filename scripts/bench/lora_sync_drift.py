"""Benchmark: how far GRPO's LoRA weight sync to vLLM moves the base weights that VtD's DPO reference runs on.

With PEFT, VtD's reference policy is the student with its adapters disabled, i.e. the base weights. Before each
generation, TRL merges the adapters into the base weights in place (`merge_adapter`), streams them to vLLM and
unmerges them (`unmerge_adapter`). In bf16, `round(round(W + delta) - delta)` is not always `W`, so each sync can move
the base weights by an ulp, and the "frozen" reference drifts step after step. This replays that on one PEFT LoRA
layer: the adapter changes every step (as training changes it), the layer is merged and unmerged once per step, and
the base weight is compared with its initial value.

    python scripts/bench/lora_sync_drift.py               # about a minute on 2 cores

Prints a Markdown table and writes JSON (`--output`).
"""

import argparse
import json

import torch
from _report import report
from peft import LoraConfig, get_peft_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=2048, help="Qwen3-1.7B's hidden size")
    parser.add_argument("--rank", type=int, default=64, help="recipes/qwen3_lora.yaml's r")
    parser.add_argument("--weight-std", type=float, default=0.02)
    parser.add_argument("--delta-rms", type=float, default=2e-4, help="adapter update rms at the last step")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--output", default="lora_sync_drift.json")
    args = parser.parse_args()

    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        torch.manual_seed(0)
        base = torch.nn.Sequential(torch.nn.Linear(args.features, args.features, bias=False))
        torch.nn.init.normal_(base[0].weight, std=args.weight_std)
        base = base.to(dtype)
        model = get_peft_model(base, LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=["0"]))
        layer = model.base_model.model[0]
        initial = layer.base_layer.weight.detach().double().clone()
        checkpoints = {10, 100, args.steps}
        for step in range(1, args.steps + 1):
            with torch.no_grad():  # the adapter grows over training, a new delta at every step
                layer.lora_A["default"].weight.normal_()
                layer.lora_B["default"].weight.normal_()
                rms = layer.get_delta_weight("default").double().pow(2).mean().sqrt().item()
                layer.lora_B["default"].weight.mul_(args.delta_rms * step / args.steps / rms)
            model.merge_adapter()
            model.unmerge_adapter()
            if step in checkpoints:
                weight = layer.base_layer.weight.detach().double()
                drift = weight - initial
                rows.append(
                    {
                        "dtype": dtype_name,
                        "step": step,
                        "delta_rms": layer.get_delta_weight("default").double().pow(2).mean().sqrt().item(),
                        "drift_rms": drift.pow(2).mean().sqrt().item(),
                        "drift_relative": (drift.norm() / initial.norm()).item(),
                        "changed_fraction": (drift != 0).double().mean().item(),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)

    columns = [
        ("dtype", "{dtype}"),
        ("syncs", "{step}"),
        ("adapter delta rms", "{delta_rms:.1e}"),
        ("base drift rms", "{drift_rms:.1e}"),
        ("drift / base norm", "{drift_relative:.1e}"),
        ("base elements changed", "{changed_fraction:.1%}"),
    ]
    title = (
        f"\n{args.features}x{args.features} layer, weights std {args.weight_std}, LoRA r={args.rank}, adapter rms "
        f"growing to {args.delta_rms} over {args.steps} steps, one merge + unmerge per step\n"
    )
    report(rows, columns, args.output, title, data={"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
