"""Train a student with Verification-then-Distillation.

```bash
# the offline demo (CPU, tiny models shipped with the package)
accelerate launch scripts/vtd.py --config recipes/demo.yaml

# Qwen3-1.7B from Qwen3-8B on GSM8K, 4 GPUs, DeepSpeed ZeRO-3, vLLM colocate
accelerate launch --config_file recipes/accelerate/zero3.yaml scripts/vtd.py --config recipes/qwen3.yaml

# any recipe field can be overridden on the command line
accelerate launch scripts/vtd.py --config recipes/demo.yaml --max_steps 10 --vtd_distill_alpha 2.0
```
"""

from trl import ModelConfig, TrlParser

from vtd_trl import VtDConfig
from vtd_trl.train import VtDScriptArguments, run

if __name__ == "__main__":
    parser = TrlParser((VtDScriptArguments, VtDConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    run(script_args, training_args, model_args)
