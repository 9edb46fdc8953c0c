"""sharded_steps.py's two optimizer steps launched over several machines: what tests/test_multinode.py checks.

    accelerate launch --config_file recipes/accelerate/cpu/zero3.yaml --num_machines 2 --machine_rank 0|1 \
        --num_processes 2 --main_process_ip 127.0.0.1 --main_process_port P \
        tests/scripts/multinode_steps.py MODELS OUT DDP_TIMEOUT

The same command on every machine, with its own `--machine_rank`. Rank 0 saves (OUT/result.pt) what sharded_steps.py
saves, with where each process ran (machine, rank on it, processes on it) and the timeout of the process group the
run trained over, asked for with `ddp_timeout` = DDP_TIMEOUT (seconds).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sharded_steps  # noqa: E402  (first: it turns DeepSpeed's shared-memory op off before DeepSpeed starts)
import torch  # noqa: E402


def placement() -> dict[str, int]:
    """Where this process runs, as torchrun's agent on its machine numbered it."""
    return {name: int(os.environ[variable]) for name, variable in
            (("machine", "GROUP_RANK"), ("local_rank", "LOCAL_RANK"), ("local_processes", "LOCAL_WORLD_SIZE"))}  # fmt: skip


def group_timeout() -> float:
    """Seconds a collective of the default process group waits for a peer (torch has no public getter)."""
    group = torch.distributed.distributed_c10d._get_default_group()
    return group._get_backend(torch.device("cpu")).options._timeout.total_seconds()


if __name__ == "__main__":
    models, out, ddp_timeout = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    model_dirs = {"student": str(models / "student"), "teacher": str(models / "teacher")}
    result = sharded_steps.run(model_dirs, out, ddp_timeout=ddp_timeout)
    placements = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(placements, placement())
    result |= {"placements": placements, "group_timeout": group_timeout()}
    if torch.distributed.get_rank() == 0:
        torch.save(result, out / "result.pt")
