"""One VtD optimizer step (SGD, lr 1) on a fixed generation batch; saves the parameter update from rank 0.

Run under `torchrun --nproc_per_node N` by tests/test_distributed.py. Usage: one_step.py MODELS_DIR OUT_FILE PER_DEVICE
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from test_trainer import lopsided_completions, one_step_update  # noqa: E402

if __name__ == "__main__":
    models, out, per_device = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    model_dirs = {"student": str(models / "student"), "teacher": str(models / "teacher")}
    update = one_step_update(model_dirs, out.parent, per_device, 1, completions=lopsided_completions)
    if torch.distributed.get_rank() == 0:
        torch.save(update, out)
