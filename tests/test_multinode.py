"""Multi-node launch, and a lost process or machine, on loopback with CPU processes (gloo).

Two "machines" are two `accelerate launch --num_machines 2 --machine_rank 0|1 --main_process_ip 127.0.0.1` commands
of one process each, the launch each node of a multi-node run makes (recipes/qwen3_multinode.yaml): under DDP and
ZeRO-3 their two optimizer steps give what one process gives (tests/test_distributed.py's reference, rel 1e-4).

A process killed mid-step ends a 2-process run at once, naming its rank, and the run resumes from its last checkpoint to
the uninterrupted run's weights. A machine that stops answering, alive but silent, ends the other machine's run after
`ddp_timeout`; under DDP on CPU transformers drops that timeout and the group waits torch's 30 minutes.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file
from test_distributed import (
    assert_matches_one_process,
    assert_mode_is_active,
    free_port,
    one_process,  # noqa: F401  (the 1-process reference: a fixture, run once here)
)
from test_train import common_args, gsm8k_file, prompts_per_step
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "accelerate" / "cpu"
SCRIPTS = ROOT / "tests" / "scripts"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
STEPS = ["--max_steps", "3", "--save_strategy", "steps", "--save_steps", "1"]
ASKED_TIMEOUT = 600  # `ddp_timeout` of the two-machine runs, long enough never to fire
STOPPED_TIMEOUT = 20  # `ddp_timeout` of the run whose machine stops answering


class Launch:
    """One `accelerate launch` (one machine) running in the background, its output in a file."""

    def __init__(self, command: list[str], log: Path):
        self.log = log
        with log.open("w") as file:
            self.process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=file, stderr=subprocess.STDOUT)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text()

    def worker(self, rank: int) -> psutil.Process:
        """The training process of global rank `rank`: torchrun's agent runs in the launcher and starts them."""
        return next(p for p in psutil.Process(self.process.pid).children() if p.environ().get("RANK") == str(rank))

    def kill(self) -> None:
        if self.process.poll() is None:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                child.kill()
            self.process.kill()
            self.process.wait()


def launch(mode: str, script: Path, args: list[str], logs: Path, machines: int = 1) -> list[Launch]:
    """2 processes of `script` under recipes/accelerate/cpu/{mode}.yaml: one launch, or one launch per machine (each
    with its share of the processes) meeting at 127.0.0.1."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{mode}.yaml"),
               "--main_process_port", str(free_port())]  # fmt: skip
    if machines > 1:
        command += ["--num_machines", str(machines), "--num_processes", "2", "--main_process_ip", "127.0.0.1"]
    return [
        Launch([*command, *(["--machine_rank", str(rank)] if machines > 1 else []), str(script), *args],
               logs.with_name(f"{logs.name}-{rank}.log"))
        for rank in range(machines)
    ]  # fmt: skip


@pytest.fixture
def start(tmp_path):
    """`launch` with its logs in tmp_path; whatever is still running at the end of the test is killed."""
    launches = []

    def run(mode: str, script: Path, args: list[str], name: str, machines: int = 1) -> list[Launch]:
        launches.extend(launch(mode, script, args, tmp_path / name, machines))
        return launches[-machines:]

    yield run
    for started in launches:
        started.kill()


def wait_for_checkpoint(checkpoint: Path, run: Launch, timeout: float = 240) -> None:
    """Until every process has written its share: the trainer state (rank 0) and each rank's RNG state."""
    files = [checkpoint / name for name in ("trainer_state.json", "rng_state_0.pth", "rng_state_1.pth")]
    deadline = time.monotonic() + timeout
    while not all(file.exists() for file in files):
        assert run.process.poll() is None, f"the run ended before {checkpoint.name}:\n{run.output()[-3000:]}"
        assert time.monotonic() < deadline, f"no {checkpoint.name} after {timeout} s"
        time.sleep(0.05)


def exit_after(run: Launch, timeout: float) -> tuple[int, float]:
    """The exit code of `run` and the seconds it took to exit from now, at most `timeout`."""
    now = time.monotonic()
    code = run.wait(timeout)
    return code, time.monotonic() - now


def failure_report(output: str) -> str:
    """The report torchrun's agent raises when a worker fails: each failed rank, its exit code or signal."""
    return output[output.rindex("ChildFailedError") :]


# ---------------------------------------------------------------------------------------------------- two machines

MODES = ["ddp", "zero3"]
_two_machines: dict[str, dict] = {}


@pytest.fixture(scope="module")
def two_machines(model_dirs, tmp_path_factory):
    """`two_machines(mode)`: multinode_steps.py on 2 machines of one process each, run once per mode."""

    def run(mode: str) -> dict:
        if mode not in _two_machines:
            out = tmp_path_factory.mktemp(f"machines-{mode}")
            args = [str(Path(model_dirs["student"]).parent), str(out), str(ASKED_TIMEOUT)]
            machines = launch(mode, SCRIPTS / "multinode_steps.py", args, out / "machine", machines=2)
            try:
                codes = [machine.wait(300) for machine in machines]
            finally:
                for machine in machines:
                    machine.kill()
            if codes != [0, 0]:  # kept, so that the other tests of this mode fail at once
                _two_machines[mode] = {"error": "\n".join(machine.output()[-3000:] for machine in machines)}
            else:
                _two_machines[mode] = torch.load(out / "result.pt")
        if "error" in _two_machines[mode]:
            pytest.fail(f"The two-machine {mode} launch failed:\n{_two_machines[mode]['error']}")
        return _two_machines[mode]

    return run


@pytest.mark.parametrize("mode", MODES)
def test_two_machines_match_one_process(mode, two_machines, one_process, model_dirs):  # noqa: F811
    """Each machine ran one process, the mode is active, and the loss and grad-norm of each step and the student's
    update equal the 1-process run's (rel 1e-4)."""
    result = two_machines(mode)
    assert result["placements"] == [{"machine": rank, "local_rank": 0, "local_processes": 1} for rank in range(2)]
    assert_mode_is_active(mode, result)
    assert_matches_one_process(result, one_process, model_dirs)


@pytest.mark.parametrize(("mode", "seconds"), [("ddp", 30 * 60), ("zero3", ASKED_TIMEOUT)])
def test_ddp_timeout_reaches_the_process_group_unless_use_cpu(mode, seconds, two_machines):
    """`ddp_timeout` is how long a collective waits for a silent peer. transformers gives it to the process group
    except with `use_cpu: true` (`TrainingArguments._setup_devices`), which DDP on CPU needs: that group keeps torch's
    default, 30 minutes. DeepSpeed and FSDP on CPU (`--use_cpu false`) and every GPU run get it."""
    assert two_machines(mode)["group_timeout"] == seconds


# ---------------------------------------------------------------------------------------------------- lost processes


def test_a_process_killed_mid_step_ends_the_run_which_resumes_from_its_checkpoint(model_dirs, tmp_path, start):
    """DDP, 2 processes, a checkpoint every step: rank 1 killed (SIGKILL) in step 2. torchrun's agent sees it die,
    stops rank 0, and the launch fails (1.1 s after the kill on 2 cores; 60 s allowed) naming rank 1 and the signal.
    Checkpoint 1 is whole; resumed from it, the run sees at each step the prompts the uninterrupted run saw and ends
    with its weights, bit for bit."""
    data = gsm8k_file(tmp_path / "train.jsonl", 24)
    uninterrupted, run_dir = tmp_path / "uninterrupted", tmp_path / "interrupted"
    script = ROOT / "scripts" / "vtd.py"
    [reference] = start("ddp", script, [*common_args(model_dirs, data, uninterrupted), *STEPS], "uninterrupted")
    [killed] = start("ddp", script, [*common_args(model_dirs, data, run_dir), *STEPS], "interrupted")
    wait_for_checkpoint(run_dir / "checkpoint-1", killed)
    killed.worker(1).send_signal(signal.SIGKILL)
    code, seconds = exit_after(killed, 60)
    assert code == 1, (code, seconds)
    # rank 1 is named, usually as the root cause (rank 0 may fail first, on the connection rank 1 dropped)
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)\s*exitcode\s*: -9 .*\(SIGKILL\)", failure_report(killed.output()))
    assert not (run_dir / "checkpoint-3").exists() and not (run_dir / "model.safetensors").exists()

    checkpoint = run_dir / "checkpoint-1"
    [resumed] = start("ddp", script, [*common_args(model_dirs, data, run_dir), *STEPS, "--resume_from_checkpoint",
                                      str(checkpoint)], "resumed")  # fmt: skip
    assert resumed.wait(300) == 0, resumed.output()[-3000:]
    assert reference.wait(300) == 0, reference.output()[-3000:]

    # The checkpoint the run was killed after is whole: it loads, with the uninterrupted run's step-1 weights.
    intact = AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    for name, p in AutoModelForCausalLM.from_pretrained(uninterrupted / "checkpoint-1").state_dict().items():
        assert torch.equal(intact[name], p), name
    assert prompts_per_step(run_dir) == prompts_per_step(uninterrupted)
    final, expected = load_file(run_dir / "model.safetensors"), load_file(uninterrupted / "model.safetensors")
    assert final.keys() == expected.keys()
    for name, p in expected.items():
        assert torch.equal(final[name], p), name


def test_a_machine_that_stops_answering_ends_the_others_run_after_ddp_timeout(model_dirs, tmp_path, start):
    """ZeRO-3 on 2 machines of one process each: machine 1's process stopped (SIGSTOP) in step 2, alive with its
    connections open, as a machine that hangs or drops off the network. No agent sees a process end; the collective
    machine 0 waits in fails after `ddp_timeout` (20 s), and machine 0's launch ends (24 s after the stop on 2 cores),
    naming the timeout. Machine 1's launch is still waiting on its stopped process."""
    data = gsm8k_file(tmp_path / "train.jsonl", 24)
    run_dir = tmp_path / "run"
    args = [*common_args(model_dirs, data, run_dir), *STEPS, "--use_cpu", "false", "--ddp_backend", "gloo",
            "--ddp_timeout", str(STOPPED_TIMEOUT)]  # fmt: skip
    survivor, lost = start("zero3", SCRIPTS / "vtd_cli.py", args, "machine", machines=2)
    wait_for_checkpoint(run_dir / "checkpoint-1", survivor)
    lost.worker(1).suspend()
    code, seconds = exit_after(survivor, STOPPED_TIMEOUT + 40)
    assert code == 1 and seconds > STOPPED_TIMEOUT - 5, seconds  # it waited for the timeout, not for something else
    output = survivor.output()
    assert re.search(rf"Timed out waiting {STOPPED_TIMEOUT * 1000}ms|Application timeout caused pair closure", output)
    assert re.search(r"rank\s*: 0 \(local_rank: 0\)\s*exitcode\s*: 1 ", failure_report(output))
    assert lost.process.poll() is None
