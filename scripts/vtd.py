"""Train a student with Verification-then-Distillation: `python scripts/vtd.py --help`.

```bash
# the offline demo (CPU, tiny models shipped with the package)
python scripts/vtd.py --config recipes/demo_tuned.yaml

# Qwen3-1.7B from Qwen3-8B on GSM8K, 4 GPUs, DeepSpeed ZeRO-3, vLLM colocate
accelerate launch --config_file recipes/accelerate/zero3.yaml scripts/vtd.py --config recipes/qwen3_tuned.yaml

# any recipe field can be overridden on the command line
python scripts/vtd.py --config recipes/demo_tuned.yaml --max_steps 10 --vtd_distill_alpha 2.0
```
"""

from vtd_trl.cli import main

if __name__ == "__main__":
    main()
