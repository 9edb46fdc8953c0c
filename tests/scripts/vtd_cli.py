"""scripts/vtd.py, same arguments, with DeepSpeed's shared-memory op off, as tests launch it under DeepSpeed on CPU.

    accelerate launch --config_file recipes/accelerate/cpu/zero3.yaml tests/scripts/vtd_cli.py --config ... \
        --use_cpu false --ddp_backend gloo

DeepSpeed would JIT-compile that op when its process group starts (70 s on 2 cores the first time); ZeRO training
does not use it (see sharded_steps.py).
"""

import os
import runpy
import sys
from pathlib import Path

if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

if __name__ == "__main__":
    sys.argv = [str(Path(__file__).resolve().parents[2] / "scripts" / "vtd.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
