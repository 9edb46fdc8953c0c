"""The gradient of one generation batch is the same on 2 processes (gloo, CPU) as on 1.

The batch is lopsided: the second process gets only correct completions (no DPO pair), the first a mix.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from test_trainer import lopsided_completions, one_step_update


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(model_dirs, tmp_path):
    models = Path(model_dirs["student"]).parent
    out = tmp_path / "update.pt"
    script = Path(__file__).parent / "scripts" / "one_step.py"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*command, str(script), str(models), str(out), "8"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    two_processes = torch.load(out)
    one_process = one_step_update(model_dirs, tmp_path, 16, 1, completions=lopsided_completions)
    assert max(d.abs().max().item() for d in one_process.values()) > 1e-4
    for name, delta in one_process.items():
        torch.testing.assert_close(two_processes[name], delta, rtol=1e-4, atol=1e-7, msg=name)
