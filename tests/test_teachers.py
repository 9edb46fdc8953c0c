"""Teachers: a local teacher once per generation batch or per micro-batch, and a teacher server (a stand-in for
`vllm serve` on localhost) that must match the same local teacher at k = vocabulary."""

import json
import math
import socket
import time

import pytest
import torch
from conftest import arithmetic_rows, fixed_rollout, vtd_args
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from vtd_trl import VtDTrainer
from vtd_trl.demo.teacher_server import TeacherServer, serving
from vtd_trl.demo.tokenizer import build_char_tokenizer
from vtd_trl.teachers import TeacherClient, TeacherServerError

K = 4


def completions(prompt_text: str, position: int, row: int = 0) -> str:
    """Positions 0 and 2 correct, 1 and 3 wrong, of different lengths."""
    a, b = (int(x) for x in prompt_text.removeprefix("What is ").removesuffix("?").split("+"))
    return [f"{a}+{b}={a + b}. \\boxed{{{a + b}}}", f"The answer is {a + b + 1}.", f"\\boxed{{{a + b}}}", "7"][
        position
    ]


class ScriptedServer(TeacherServer):
    """A stand-in server whose scoring requests follow `plan`: None answers, an int fails with that status, a float
    sleeps that many seconds before answering."""

    def __init__(self, *args, plan=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.plan = list(plan)

    def fault(self, path):
        if path != "/v1/completions" or not self.plan:
            return None
        action = self.plan.pop(0)
        if isinstance(action, float):
            time.sleep(action)
            return None
        return action

    def handle_error(self, request, client_address):  # a client that timed out closed the socket: expected here
        pass


@pytest.fixture(scope="module")
def teacher(model_dirs):
    return AutoModelForCausalLM.from_pretrained(model_dirs["teacher"]), AutoTokenizer.from_pretrained(
        model_dirs["teacher"]
    )


def make_server(teacher, cls=TeacherServer, max_logprobs=None, tokenizer=None, **kwargs):
    model, teacher_tokenizer = teacher
    tokenizer = tokenizer or teacher_tokenizer
    return cls(("127.0.0.1", 0), model, tokenizer, max_logprobs or len(tokenizer), name="tiny-teacher", **kwargs)


@pytest.fixture
def server(teacher):
    with serving(make_server(teacher)) as running:
        yield running


def build(model_dirs, tmp_path, server_url=None, rows=None, **overrides):
    rows = rows or arithmetic_rows(2)
    overrides = {"per_device_train_batch_size": len(rows) * K, "max_completion_length": 64, **overrides}
    if server_url is not None:
        overrides.setdefault("teacher_server_url", server_url)
        overrides.setdefault("teacher_server_timeout", 5.0)
    return VtDTrainer(
        model=model_dirs["student"],
        teacher_model=None if server_url else model_dirs["teacher"],
        args=vtd_args(tmp_path, num_generations=K, **overrides),
        train_dataset=Dataset.from_list(rows),
        rollout_func=fixed_rollout(completions),
    )


def loss_and_grads(trainer, rows=None):
    rows = rows or arithmetic_rows(2)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    out = trainer._generate_and_score_completions([row for row in rows for _ in range(K)])
    loss = trainer.compute_loss(trainer.model, out)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in trainer.model.named_parameters()}


def perturbed(trainer):
    """Move the student off its initial weights (the DPO reference), so both terms have gradients of size."""
    torch.manual_seed(3)
    with torch.no_grad():
        for param in trainer.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return trainer


# ---------------------------------------------------------------------------------------------------- the server


def test_stand_in_answers_as_vllm_and_trl_parses_it(server, teacher):
    """`prompt_logprobs`: one entry per position after the first, top-k plus the actual token, ranked; TRL's parser
    turns them into the teacher's sorted top-k log-probs."""
    model, tokenizer = teacher
    ids = tokenizer("<|im_start|>user\nWhat is 2+3?<|im_end|>", add_special_tokens=False)["input_ids"]
    body = json.dumps({"model": "tiny-teacher", "prompt": [ids], "max_tokens": 1, "prompt_logprobs": 3}).encode()
    with socket.create_connection(server.server_address) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    positions = json.loads(raw.split(b"\r\n\r\n", 1)[1])["choices"][0]["prompt_logprobs"]
    assert positions[0] is None and len(positions) == len(ids)
    log_p = model(input_ids=torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
    for t, entry in enumerate(positions[1:]):
        ranked = sorted(entry.items(), key=lambda kv: kv[1]["rank"])
        assert [v["rank"] for _, v in ranked[:3]] == [1, 2, 3]
        assert [int(i) for i, _ in ranked[:3]] == log_p[t].topk(3).indices.tolist()
        assert str(ids[t + 1]) in entry  # the actual token, ranked wherever it falls
        assert entry[str(ids[t + 1])]["logprob"] == pytest.approx(log_p[t, ids[t + 1]].item(), abs=1e-6)

    client = TeacherClient(server.url, connection_timeout=5, request_timeout=5, max_retries=0)
    parsed = client.get_sequence_logprobs([ids], [5], top_logprobs=3)
    values = torch.tensor(parsed["logprobs"][0])
    torch.testing.assert_close(values, log_p[4:].topk(3).values, atol=1e-6, rtol=0)
    assert client.model == "tiny-teacher"


# ---------------------------------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_server_teacher_matches_the_local_teacher_at_full_vocabulary(model_dirs, tmp_path, server, tokenizer, beta):
    """One step: loss and every gradient of the server teacher at k = vocabulary equal the same local teacher's, both
    its sparse top-k signal at that k and the dense full-vocabulary loss."""
    vocab = len(tokenizer)
    options = dict(vtd_distill_beta=beta, vtd_distill_incorrect=True, vtd_dpo_beta=0.5)
    remote = perturbed(build(model_dirs, tmp_path / "server", server.url, vtd_distill_top_k=vocab, **options))
    assert remote.teacher_model is None and remote.teacher.name == "tiny-teacher"
    loss, grads = loss_and_grads(remote)
    assert loss > 0
    for name, local_options in (("sparse", dict(vtd_distill_top_k=vocab)), ("dense", {})):
        local = perturbed(build(model_dirs, tmp_path / name, **options, **local_options))
        local_loss, local_grads = loss_and_grads(local)
        assert local_loss == pytest.approx(loss, rel=1e-5), name
        for key, grad in grads.items():
            torch.testing.assert_close(grad, local_grads[key], rtol=1e-4, atol=1e-7, msg=lambda m, n=key: f"{n}: {m}")


def test_server_teacher_and_local_teacher_agree_at_equal_k(model_dirs, tmp_path, server):
    """At k = 4 (well below the vocabulary) both teachers give the same top-k signal and so the same loss, which
    differs from the dense one: the tail bucket is a real approximation there."""
    remote_loss, _ = loss_and_grads(perturbed(build(model_dirs, tmp_path / "s", server.url, vtd_distill_top_k=4)))
    local_loss, _ = loss_and_grads(perturbed(build(model_dirs, tmp_path / "l", vtd_distill_top_k=4)))
    dense_loss, _ = loss_and_grads(perturbed(build(model_dirs, tmp_path / "d")))
    assert remote_loss == pytest.approx(local_loss, rel=1e-5)
    assert abs(remote_loss - dense_loss) > 1e-3 * dense_loss


def test_short_run_with_the_server_teacher_matches_the_local_teacher(model_dirs, tmp_path, server, tokenizer):
    rows = arithmetic_rows(4)
    run = dict(
        rows=rows,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        max_steps=3,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        vtd_distill_incorrect=True,
        vtd_distill_top_k=len(tokenizer),
    )
    remote = build(model_dirs, tmp_path / "server", server.url, **run)
    local = build(model_dirs, tmp_path / "local", **run)
    before = {n: p.detach().clone() for n, p in local.model.named_parameters()}
    remote.train()
    local.train()
    moved = max((p.detach() - before[n]).abs().max().item() for n, p in local.model.named_parameters())
    assert moved > 1e-3
    for (name, p), (_, q) in zip(remote.model.named_parameters(), local.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    # 3 steps, each one generation batch of 2 micro-batches: one scoring request per generation batch (+1 at start)
    assert server.requests.count("/v1/completions") == 1 + 3


# ---------------------------------------------------------------------------------------------------- bad input


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_a_clear_error_before_any_model_loads(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    args = vtd_args(tmp_path, teacher_server_url=url, teacher_server_timeout=0.5, vtd_distill_top_k=8)
    rows = Dataset.from_list(arithmetic_rows(2))
    start = time.monotonic()
    with pytest.raises(TeacherServerError, match=rf"teacher server at {url}.*teacher_server_timeout"):
        VtDTrainer(model="/no/such/student", args=args, train_dataset=rows)  # the student would fail to load
    assert time.monotonic() - start < 10


def test_server_with_another_vocabulary_is_refused_at_start(model_dirs, tmp_path, teacher):
    other = build_char_tokenizer(extra_tokens=["0123"])  # "0123" becomes one token: the same text, other ids
    with serving(make_server(teacher, tokenizer=other)) as running:
        with pytest.raises(ValueError, match="tokenizes text differently from the student's tokenizer"):
            build(model_dirs, tmp_path, running.url, vtd_distill_top_k=8)


def test_server_allowing_fewer_logprobs_than_k_is_refused_at_start(model_dirs, tmp_path, teacher):
    with serving(make_server(teacher, max_logprobs=4)) as running:
        with pytest.raises(TeacherServerError, match="--max-logprobs 8.*Training has not started"):
            build(model_dirs, tmp_path, running.url, vtd_distill_top_k=8, teacher_server_max_retries=0)


def test_server_with_a_short_context_is_refused_at_start(model_dirs, tmp_path, teacher):
    with serving(make_server(teacher, max_len=32)) as running:
        with pytest.raises(ValueError, match=r"max_model_len=32.*max_completion_length=64"):
            build(model_dirs, tmp_path, running.url, vtd_distill_top_k=8)


def test_a_slow_or_failing_request_is_retried(model_dirs, tmp_path, teacher):
    plan = [None, 1.5, 503]  # the start-up probe; then a request that times out, then a 503; then answers
    with serving(make_server(teacher, cls=ScriptedServer, plan=plan)) as running:
        trainer = build(
            model_dirs,
            tmp_path,
            running.url,
            vtd_distill_top_k=8,
            teacher_server_request_timeout=0.5,
            teacher_server_max_retries=2,
        )
        loss, _ = loss_and_grads(trainer)
    assert math.isfinite(loss) and loss > 0
    assert running.requests.count("/v1/completions") == 4 and not running.plan


def test_a_request_failing_mid_run_stops_with_a_clear_error_and_the_checkpoint_intact(model_dirs, tmp_path, teacher):
    run = dict(vtd_distill_top_k=8, max_steps=3, save_strategy="steps", save_steps=1, teacher_server_max_retries=1)
    plan = [None, None, 500, 500]  # the start-up probe and step 1 answer; step 2 fails, and so does its retry
    with serving(make_server(teacher, cls=ScriptedServer, plan=plan)) as running:
        trainer = build(model_dirs, tmp_path, running.url, **run)
        with pytest.raises(TeacherServerError, match=r"after 1 retries.*500.*--resume_from_checkpoint"):
            trainer.train()
    checkpoint = tmp_path / "checkpoint-1"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-1"]
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 1
    saved = AutoModelForCausalLM.from_pretrained(checkpoint)
    for (name, p), (_, q) in zip(saved.named_parameters(), trainer.model.named_parameters()):
        assert torch.equal(p, q.detach()), name  # nothing of the failed step reached the weights

    with serving(make_server(teacher)) as healthy:
        resumed = build(model_dirs, tmp_path, healthy.url, **run)
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 3


def test_demo_command_with_a_teacher_server(tmp_path):
    """The server-teacher demo of docs/teachers.md, cut to 2 steps: the script trains against a served demo teacher."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from vtd_trl.demo.teacher_server import load

    root = Path(__file__).resolve().parents[1]
    with serving(load("vtd-demo/teacher", max_logprobs=64)) as running:
        port = running.server_address[1]
        command = [sys.executable, str(root / "scripts" / "vtd.py"),
                   "--config", str(root / "recipes" / "demo_server_teacher.yaml"), "--teacher_server_port", str(port),
                   "--max_steps", "2", "--demo_train_rows", "64", "--demo_eval_rows", "16",
                   "--output_dir", str(tmp_path / "demo")]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"teacher   served at http://127.0.0.1:{port} (top-64 log-probs)" in result.stdout
    assert "top-64 + tail" in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("Held-out greedy accuracy (16 problems)"))
    assert len(re.findall(r"([\d.]+)%", line)) == 2 and f"teacher http://127.0.0.1:{port}" in line
    assert running.requests.count("/v1/completions") == 1 + 2  # the start-up probe, then one per generation batch
    assert (tmp_path / "demo" / "model.safetensors").exists()
    assert "vtd-demo/teacher" in (tmp_path / "demo" / "README.md").read_text()  # the served model, in the card


@pytest.mark.parametrize(("when", "calls"), [("generation_batch", 1), ("micro_batch", 2)])
def test_local_teacher_runs_once_for_all_iterations_on_a_generation_batch(model_dirs, tmp_path, when, calls):
    """GRPO's `num_iterations=2` trains twice on each generation batch: once per generation batch scores it once."""
    trainer = build(model_dirs, tmp_path, num_iterations=2, max_steps=2, vtd_teacher_signal=when)
    seen = []
    original = trainer.teacher.signal
    trainer.teacher.signal = lambda batch: seen.append(len(batch)) or original(batch)
    trainer.train()
    assert len(seen) == calls and all(n == 4 for n in seen)  # the 4 correct completions, each time


def test_local_teacher_generates_greedily_to_the_first_eos(model_dirs, tokenizer):
    """`LocalTeacher.generate` on left-padded prompts against a greedy loop written here, one prompt at a time."""
    from accelerate import Accelerator

    from vtd_trl.teachers import LocalTeacher

    model = AutoModelForCausalLM.from_pretrained(model_dirs["teacher"]).eval()
    teacher = LocalTeacher(model, Accelerator(cpu=True))
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("What is 12+5?", "7+1?")]
    width = max(map(len, prompts))
    pad = tokenizer.pad_token_id
    prompt_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    prompt_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    # An EOS set holding each prompt's first greedy token ends that prompt's completion right there.
    first = [int(model(torch.tensor([p])).logits[0, -1].argmax()) for p in prompts]
    for eos in ([tokenizer.eos_token_id], [tokenizer.eos_token_id, first[1]]):
        generated = teacher.generate(prompt_ids, prompt_mask, 6, eos, pad)
        for prompt, ids in zip(prompts, generated):
            expected, sequence = [], list(prompt)
            with torch.no_grad():
                while len(expected) < 6 and not (expected and expected[-1] in eos):
                    expected.append(int(model(torch.tensor([sequence])).logits[0, -1].argmax()))
                    sequence.append(expected[-1])
            assert ids == expected
    assert generated[1] == [first[1]]  # stopped at the extra EOS
    assert teacher.generate(prompt_ids[:0], prompt_mask[:0], 6, eos, pad) == []
