"""End to end on a tiny Qwen3 model: samples file shape, grading, scores from the file, resume, CLI, vLLM wiring."""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from vtd_trl.demo.models import tiny_qwen3
from vtd_trl.demo.tokenizer import build_char_tokenizer
from vtd_trl.eval import EvalConfig, evaluate
from vtd_trl.eval import generate as generate_module
from vtd_trl.eval.cli import DESCRIPTION, main, make_parser
from vtd_trl.eval.harness import build_prompt, sample_seed
from vtd_trl.eval.results import append_samples, read_samples
from vtd_trl.verify import extract_answer, verify

PROBLEMS = [
    {"id": "p1", "problem": "What is 1+1?", "answer": "2"},
    {"id": "p2", "problem": "Compute the sum of the first ten positive integers.", "answer": "55"},
    {"id": "p3", "problem": "Half of one?", "answer": "\\frac{1}{2}"},
]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-qwen3")
    tokenizer = build_char_tokenizer()
    tiny_qwen3(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in PROBLEMS))
    return str(path)


def _config(model_path, data_file, output_dir, **kwargs):
    defaults = {"benchmark": "aime24", "backend": "transformers", "max_tokens": 6, "batch_size": 2}
    return EvalConfig(model=model_path, data_file=data_file, output_dir=str(output_dir), **{**defaults, **kwargs})


def _greedy_reference(model, tokenizer, prompt, max_tokens):
    """Token-by-token argmax on one unpadded prompt: an independent check of the batched, left-padded backend."""
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    new = []
    for _ in range(max_tokens):
        with torch.no_grad():
            token = model(torch.cat([ids, torch.tensor([new], dtype=torch.long)], dim=1)).logits[0, -1].argmax().item()
        new.append(token)
        if token == tokenizer.eos_token_id:
            break
    return tokenizer.decode(new, skip_special_tokens=True), len(new), new[-1] != tokenizer.eos_token_id


def test_greedy_samples_match_an_unbatched_reference_and_the_score_is_their_mean(
    model_path, data_file, tmp_path, capfd
):
    summary = evaluate(_config(model_path, data_file, tmp_path / "out", mode="greedy"))
    assert "Generating" in capfd.readouterr().err  # progress bar

    records = read_samples(tmp_path / "out" / "samples.jsonl")
    assert [(r["problem_id"], r["sample_index"]) for r in records] == [("p1", 0), ("p2", 0), ("p3", 0)]
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    for record, row in zip(records, PROBLEMS):
        prompt = build_prompt(tokenizer, summary["prompt_template"], row["problem"], enable_thinking=True)
        text, num_tokens, truncated = _greedy_reference(model, tokenizer, prompt, 6)
        assert (record["completion"], record["num_tokens"], record["truncated"]) == (text, num_tokens, truncated)
        assert record["gold"] == row["answer"]
        assert record["extracted"] == extract_answer(record["completion"])
        assert record["correct"] == verify(record["completion"], row["answer"])

    assert summary["metric"] == "greedy"
    assert summary["score"] == sum(r["correct"] for r in records) / 3
    assert summary["counts"]["graded"] == 3 and summary["counts"]["samples"] == 3
    assert summary["sampling"] == {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "max_tokens": 6}
    assert summary["prompt_template"].endswith("put your final answer within \\boxed{}.")
    assert summary["chat_template_kwargs"] == {"enable_thinking": True}
    assert summary["backends"] == ["transformers"]
    assert {"torch", "transformers", "trl", "math-verify"} <= set(summary["versions"])
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_greedy_ignores_decoding_settings_shipped_in_the_checkpoint(data_file, tmp_path):
    # transformers fills what the harness leaves unset from model.generation_config; a repetition penalty there would
    # make the transformers backend disagree with vLLM (and with plain argmax).
    tokenizer = build_char_tokenizer()
    model = tiny_qwen3(tokenizer)
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.6, top_k=20, repetition_penalty=3.0, no_repeat_ngram_size=2, min_p=0.5
    )
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    model_path = str(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "generation_config.json").read_text())["repetition_penalty"] == 3.0

    summary = evaluate(_config(model_path, data_file, tmp_path / "out", mode="greedy", max_tokens=20))
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    for record, row in zip(read_samples(tmp_path / "out" / "samples.jsonl"), PROBLEMS):
        prompt = build_prompt(tokenizer, summary["prompt_template"], row["problem"], enable_thinking=True)
        assert (record["completion"], record["num_tokens"], record["truncated"]) == _greedy_reference(
            model, tokenizer, prompt, 20
        )


class _CountingGenerator(generate_module.TransformersGenerator):
    generated: list[int] = []

    def generate(self, prompts, seeds):
        type(self).generated.append(len(prompts))
        yield from super().generate(prompts, seeds)


def test_resume_generates_only_missing_samples(model_path, data_file, tmp_path, monkeypatch):
    monkeypatch.setattr("vtd_trl.eval.harness.TransformersGenerator", _CountingGenerator)
    _CountingGenerator.generated = []
    out = tmp_path / "out"
    first = evaluate(_config(model_path, data_file, out, mode="average", n_samples=3))
    samples = out / "samples.jsonl"
    lines = samples.read_text().splitlines()
    assert sorted((json.loads(x)["problem_id"], json.loads(x)["sample_index"]) for x in lines) == [
        (p, i) for p in ("p1", "p2", "p3") for i in range(3)
    ]
    by_problem = {
        p: [json.loads(x)["correct"] for x in lines if json.loads(x)["problem_id"] == p] for p in ("p1", "p2", "p3")
    }
    assert first["score"] == pytest.approx(sum(sum(c) / 3 for c in by_problem.values()) / 3)

    # Nothing missing: no generation, same file, same summary.
    assert evaluate(_config(model_path, data_file, out, mode="average", n_samples=3)) == first
    assert samples.read_text().splitlines() == lines
    # More samples: only the 2 new ones per problem, appended after the first 9.
    evaluate(_config(model_path, data_file, out, mode="average", n_samples=5))
    extended = samples.read_text().splitlines()
    assert extended[:9] == lines and len(extended) == 15
    # An interrupted run: 4 whole lines and a torn one are kept/dropped, the other 5 of n=3 are generated again.
    samples.write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])
    evaluate(_config(model_path, data_file, out, mode="average", n_samples=3))
    assert len(samples.read_text().splitlines()) == 9
    assert _CountingGenerator.generated == [9, 6, 5]


SAMPLE_RECORDS = [
    {"problem_id": "p1", "sample_index": 0, "completion": "½ is \\boxed{\\frac{1}{2}}"},
    {"problem_id": "p2", "sample_index": 0, "completion": "é\u2028è"},  # a Unicode line break inside the record
    {"problem_id": "p3", "sample_index": 0, "completion": "done"},
]


def test_a_line_torn_inside_a_multibyte_character_is_dropped(tmp_path, caplog):
    path = tmp_path / "samples.jsonl"
    first, second = (json.dumps(r, ensure_ascii=False).encode() for r in SAMPLE_RECORDS[:2])
    cut = second.index("é".encode()) + 1  # between the two bytes of é
    path.write_bytes(first + b"\n" + second[:cut])
    assert read_samples(path) == SAMPLE_RECORDS[:1]
    assert "dropping its torn last line 2" in caplog.text
    assert path.read_bytes() == first + b"\n"
    append_samples(path, SAMPLE_RECORDS[1:])
    assert read_samples(path) == SAMPLE_RECORDS


def test_appending_after_a_last_line_without_its_newline_starts_a_new_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    records = [SAMPLE_RECORDS[0], SAMPLE_RECORDS[2], {"problem_id": "p4", "sample_index": 0, "completion": "x"}]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text(lines[0] + "\n" + lines[1], encoding="utf-8")  # the write stopped before the newline
    assert read_samples(path) == records[:2]
    append_samples(path, records[2:])
    assert path.read_text(encoding="utf-8") == "".join(line + "\n" for line in lines)
    assert read_samples(path) == records


def test_resume_refuses_samples_of_other_settings(model_path, data_file, tmp_path):
    evaluate(_config(model_path, data_file, tmp_path / "out", mode="average", n_samples=1))
    with pytest.raises(
        ValueError, match=r"(?s)holds samples of a different run.*sampling: saved .*'temperature': 0\.6"
    ):
        evaluate(_config(model_path, data_file, tmp_path / "out", mode="average", n_samples=1, temperature=0.7))
    with pytest.raises(ValueError, match=r"(?s)holds samples of a different run.*dtype: saved 'auto'"):
        evaluate(_config(model_path, data_file, tmp_path / "out", mode="average", n_samples=1, dtype="float32"))


def test_ungradable_problems_are_left_out_and_counted(model_path, tmp_path, monkeypatch):
    # Which golds the parser rejects is verify's business; here one is declared unparseable (verify -> None).
    monkeypatch.setattr(
        "vtd_trl.eval.harness.verify", lambda completion, gold: None if gold == "@" else verify(completion, gold)
    )
    rows = [
        {"question_id": 1, "prompt": "Find n.", "answer": "7", "answer_type": "number"},
        {"question_id": 2, "prompt": "Describe f.", "answer": "f(x)=x", "answer_type": "description"},
        {"question_id": 3, "prompt": "Name her.", "answer": "@", "answer_type": "number"},
    ]
    path = tmp_path / "amo.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kwargs = {"benchmark": "amo_bench", "mode": "greedy", "max_tokens": 2}
    summary = evaluate(_config(model_path, str(path), tmp_path / "default", **kwargs))
    assert summary["ungradable"] == {
        "2": "answer_type 'description' needs an LLM judge",
        "3": "gold answer cannot be parsed",
    }
    assert [r["problem_id"] for r in read_samples(tmp_path / "default" / "samples.jsonl")] == ["1"]
    assert summary["counts"]["graded"] == 1 and summary["counts"]["ungradable_in_benchmark"] == 2

    summary = evaluate(_config(model_path, str(path), tmp_path / "all", include_ungradable=True, **kwargs))
    records = read_samples(tmp_path / "all" / "samples.jsonl")
    assert [(r["problem_id"], r["correct"] is None) for r in records] == [("1", False), ("2", True), ("3", True)]
    assert summary["counts"]["graded"] == 1 and summary["counts"]["ungradable"] == 2


def test_a_verifier_timeout_on_a_gradable_problem_is_an_incorrect_sample(model_path, data_file, tmp_path, monkeypatch):
    # Every sample is graded correct except the first, whose verdict is None (a timeout parsing the gold under load).
    verdicts = []

    def flaky_verify(completion, gold):
        if completion == f"\\boxed{{{gold}}}":  # the up-front check that the gold parses
            return verify(completion, gold)
        verdicts.append(None if not verdicts else True)
        return verdicts[-1]

    monkeypatch.setattr("vtd_trl.eval.harness.verify", flaky_verify)
    summary = evaluate(_config(model_path, data_file, tmp_path / "out", mode="average", n_samples=2))
    assert verdicts == [None] + [True] * 5
    records = read_samples(tmp_path / "out" / "samples.jsonl")
    assert [(r["problem_id"], r["sample_index"], r["correct"]) for r in records][:2] == [
        ("p1", 0, False),
        ("p1", 1, True),
    ]
    assert summary["counts"]["graded"] == 3 and summary["counts"]["ungradable"] == 0
    assert summary["score"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_script_flags(model_path, data_file, tmp_path):
    out = tmp_path / "cli"
    argv = ["--model", model_path, "--mode", "majority", "--n_samples", "2", "--data-file", data_file]
    argv += ["--output-dir", str(out), "--backend", "transformers", "--max_tokens", "4", "--no_enable_thinking"]
    summary = main("hmmt25", argv)
    assert (summary["benchmark"], summary["mode"], summary["metric"]) == ("hmmt25", "majority", "maj@2")
    assert summary["chat_template_kwargs"] == {"enable_thinking": False}
    assert summary["sampling"] == {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0, "max_tokens": 4}
    assert len(read_samples(out / "samples.jsonl")) == 6
    assert json.loads((out / "run.json").read_text())["data"]["data_file"] == data_file


def test_a_script_bound_to_a_benchmark_takes_no_benchmark_flag():
    bound = make_parser("gsm8k", "Evaluate a model on GSM8K.")
    assert "Evaluate a model on GSM8K." in bound.format_help() and "--benchmark" not in bound.format_help()
    (config,) = bound.parse_args_and_config(["--model", "m"])
    assert config.benchmark == "gsm8k"
    with pytest.raises(ValueError, match="--benchmark"):
        bound.parse_args_and_config(["--model", "m", "--benchmark", "aime24"])
    free = make_parser()
    assert DESCRIPTION.splitlines()[0] in free.format_help() and "--benchmark" in free.format_help()
    (config,) = free.parse_args_and_config(["--model", "m", "--benchmark", "aime24"])
    assert config.benchmark == "aime24"


def test_eval_script_help_has_a_description_and_no_benchmark_flag():
    script = Path(__file__).resolve().parents[1] / "scripts" / "eval" / "eval_math500.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Evaluate a model on MATH-500" in result.stdout and "--mode" in result.stdout
    assert "--benchmark" not in result.stdout


def test_config_errors_name_the_field_and_the_fix():
    with pytest.raises(ValueError, match="n_samples=4; use --mode majority or --mode average"):
        EvalConfig(model="m", benchmark="aime24", mode="greedy", n_samples=4)
    with pytest.raises(ValueError, match=r"prompt_template='Solve it' must contain the placeholder \{problem\}"):
        EvalConfig(model="m", benchmark="aime24", prompt_template="Solve it")
    with pytest.raises(ValueError, match="benchmark='aime23' is not known"):
        EvalConfig(model="m", benchmark="aime23")
    assert EvalConfig(model="Qwen/Qwen3-1.7B", benchmark="aime25", mode="majority").output_dir == (
        "eval_results/Qwen--Qwen3-1.7B/aime25/majority"
    )
    assert EvalConfig(model="m", benchmark="aime25", mode="average").n_samples == 16


class _FakeLLM:
    """Stands in for vllm.LLM: records the call and answers \\boxed{2} to everything."""

    calls: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def generate(self, requests, sampling_params, use_tqdm):
        type(self).calls.append((self.kwargs, requests, sampling_params))
        output = types.SimpleNamespace(text="\\boxed{2}", token_ids=[1, 2, 3], finish_reason="stop")
        return [types.SimpleNamespace(outputs=[output]) for _ in requests]


def test_vllm_backend_sends_every_sample_in_one_call(model_path, data_file, tmp_path, monkeypatch):
    fake = types.ModuleType("vllm")
    fake.LLM = _FakeLLM
    fake.SamplingParams = lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "vllm", fake)
    _FakeLLM.calls = []
    config = _config(model_path, data_file, tmp_path / "vllm", mode="average", n_samples=2, tensor_parallel_size=2)
    config.backend = "vllm"
    summary = evaluate(config)

    ((init, requests, params),) = _FakeLLM.calls
    assert init["tensor_parallel_size"] == 2 and init["model"] == model_path
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    expected_ids = [
        tokenizer(build_prompt(tokenizer, config.prompt_template, row["problem"], True), add_special_tokens=False)[
            "input_ids"
        ]
        for row in PROBLEMS
        for _ in range(2)
    ]
    assert [r["prompt_token_ids"] for r in requests] == expected_ids
    assert [p["seed"] for p in params] == [sample_seed(0, row["id"], i) for row in PROBLEMS for i in range(2)]
    assert {(p["n"], p["temperature"], p["top_p"], p["top_k"], p["max_tokens"]) for p in params} == {
        (1, 0.6, 0.95, 20, 6)
    }
    # Gold answers 2, 55 and 1/2: only p1 is right, with both samples.
    assert summary["backends"] == ["vllm"]
    assert summary["score"] == pytest.approx(1 / 3)
    assert summary["metrics"]["maj@2"] == pytest.approx(1 / 3)
    assert summary["counts"]["truncated_samples"] == 0


class _ChunkedFakeLLM:
    """A vllm.LLM that answers each request with its seed, notes how many lines `samples_path` held when called, and
    raises on call number `fail_at` (1-based)."""

    samples_path = None
    fail_at = None
    calls: list = []

    def __init__(self, **kwargs):
        pass

    def generate(self, requests, sampling_params, use_tqdm):
        lines = len(read_samples(self.samples_path))
        type(self).calls.append((len(requests), lines))
        if len(self.calls) == self.fail_at:
            raise RuntimeError("CUDA error")
        return [
            types.SimpleNamespace(
                outputs=[types.SimpleNamespace(text=f"\\boxed{{{p['seed']}}}", token_ids=[1], finish_reason="stop")]
            )
            for p in sampling_params
        ]


def test_vllm_backend_appends_samples_chunk_by_chunk(model_path, data_file, tmp_path, monkeypatch):
    fake = types.ModuleType("vllm")
    fake.LLM = _ChunkedFakeLLM
    fake.SamplingParams = lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(generate_module, "VLLM_CHUNK_SIZE", 4)
    out = tmp_path / "vllm"
    _ChunkedFakeLLM.samples_path, _ChunkedFakeLLM.fail_at, _ChunkedFakeLLM.calls = out / "samples.jsonl", 3, []
    config = _config(model_path, data_file, out, mode="average", n_samples=3, backend="vllm")
    # A crash in the third call keeps the 8 samples of the first two, each appended right after its call.
    with pytest.raises(RuntimeError, match="CUDA error"):
        evaluate(config)
    assert _ChunkedFakeLLM.calls == [(4, 0), (4, 4), (1, 8)]
    assert len(read_samples(out / "samples.jsonl")) == 8

    _ChunkedFakeLLM.fail_at, _ChunkedFakeLLM.calls = None, []
    evaluate(config)
    assert _ChunkedFakeLLM.calls == [(1, 8)]
    records = read_samples(out / "samples.jsonl")
    assert sorted((r["problem_id"], r["sample_index"]) for r in records) == [
        (row["id"], i) for row in PROBLEMS for i in range(3)
    ]
    # Each completion went to its own sample: it echoes that sample's seed.
    assert all(r["completion"] == f"\\boxed{{{sample_seed(0, r['problem_id'], r['sample_index'])}}}" for r in records)


def test_auto_backend_is_vllm_only_with_vllm_and_a_gpu(monkeypatch):
    monkeypatch.setattr(generate_module.importlib.util, "find_spec", lambda name: object() if name == "vllm" else None)
    monkeypatch.setattr(generate_module.torch.cuda, "is_available", lambda: True)
    assert generate_module.resolve_backend("auto") == "vllm"
    monkeypatch.setattr(generate_module.torch.cuda, "is_available", lambda: False)
    assert generate_module.resolve_backend("auto") == "transformers"
    assert generate_module.resolve_backend("vllm") == "vllm"


def test_vllm_backend_without_vllm_says_how_to_install_it(model_path, data_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    config = _config(model_path, data_file, tmp_path / "out", backend="vllm")
    with pytest.raises(ImportError, match=r"pip install 'vtd-trl\[vllm\]'; or pass --backend transformers"):
        evaluate(config)
