"""Generation backends: vLLM (GPU, tensor parallel, up to `VLLM_CHUNK_SIZE` samples per `generate` call) and
transformers (CPU or GPU, batched). Both take token ids and per-sample seeds and return the same [`Completion`]s, so
results files do not depend on the backend.
"""

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerBase

from .config import Sampling

# Requests per vLLM `generate` call. Large enough that a benchmark's problems × samples usually go in one call (so
# vLLM schedules and prefix-caches them together), small enough that a crash loses at most one chunk: results are
# yielded, and so appended to `samples.jsonl`, after each call.
VLLM_CHUNK_SIZE = 4096


@dataclass(frozen=True)
class Completion:
    """A generated completion: its text (special tokens removed), its length in tokens (EOS included), and whether
    it hit `max_tokens` before EOS."""

    text: str
    num_tokens: int
    truncated: bool


def resolve_backend(backend: str) -> str:
    """`auto` is vLLM when it is installed and a GPU is visible, transformers otherwise."""
    if backend != "auto":
        return backend
    return "vllm" if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() else "transformers"


class TransformersGenerator:
    """Batched `model.generate` with left padding; runs anywhere transformers runs.

    Sampling is seeded per batch from the seed of its first sample, so a run is reproducible for the same set of
    pending samples (vLLM seeds each sample on its own).
    """

    def __init__(
        self,
        model: str,
        tokenizer: PreTrainedTokenizerBase,
        sampling: Sampling,
        batch_size: int = 8,
        dtype: str = "auto",
    ):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        if tokenizer.pad_token_id is None:
            raise ValueError(f"The tokenizer of {model!r} has no pad token; batched generation needs one.")
        shipped = self.model.generation_config
        eos = shipped.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else []) | {tokenizer.eos_token_id}
        self.eos_token_ids = sorted(eos)
        # `generate` fills every field left unset in the config it is given from `model.generation_config`, so the
        # checkpoint's generation_config.json (repetition_penalty, num_beams, ...) would change the outputs: keep
        # only its special tokens there, and set the sampling parameters explicitly below.
        self.model.generation_config = GenerationConfig(
            bos_token_id=shipped.bos_token_id, eos_token_id=self.eos_token_ids, pad_token_id=tokenizer.pad_token_id
        )
        kwargs = {"max_new_tokens": sampling.max_tokens, "do_sample": not sampling.greedy}
        if not sampling.greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
            kwargs.update(min_p=sampling.min_p or None)
        self.generation_config = GenerationConfig(
            **kwargs, pad_token_id=tokenizer.pad_token_id, eos_token_id=self.eos_token_ids
        )

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], seeds: list[int]) -> Iterator[list[tuple[int, Completion]]]:
        """Yield `(index into prompts, completion)` pairs batch by batch, with a progress bar."""
        device = self.model.device
        with tqdm(total=len(prompts), desc="Generating", unit="sample") as progress:
            for start in range(0, len(prompts), self.batch_size):
                batch = prompts[start : start + self.batch_size]
                width = max(len(ids) for ids in batch)
                pad = self.tokenizer.pad_token_id
                input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=device)
                attention_mask = torch.tensor(
                    [[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device
                )
                torch.manual_seed(seeds[start])
                output = self.model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, generation_config=self.generation_config
                )
                results = []
                for offset, row in enumerate(output[:, width:].tolist()):
                    end = next((i + 1 for i, token in enumerate(row) if token in self.eos_token_ids), None)
                    tokens = row if end is None else row[:end]
                    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                    results.append((start + offset, Completion(text, len(tokens), end is None)))
                progress.update(len(batch))
                yield results


class VLLMGenerator:
    """vLLM offline inference: every pending sample is one request with its own seed, sent in `generate` calls of
    `VLLM_CHUNK_SIZE` requests so vLLM schedules (and prefix-caches) a whole chunk at once, and a crash loses at
    most the chunk in progress. vLLM is imported here, not at module import, so the rest of the harness runs where
    vLLM cannot be installed."""

    def __init__(
        self,
        model: str,
        tokenizer: str,
        sampling: Sampling,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
    ):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as err:
            raise ImportError(
                "The vLLM backend needs vllm on a GPU machine: pip install 'vtd-trl[vllm]'; or pass "
                "--backend transformers."
            ) from err
        self.sampling_params_cls = SamplingParams
        self.sampling = sampling
        self.llm = LLM(
            model=model,
            tokenizer=tokenizer,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=True,
        )

    def generate(self, prompts: list[list[int]], seeds: list[int]) -> Iterator[list[tuple[int, Completion]]]:
        """Yield `(index into prompts, completion)` pairs chunk by chunk (`VLLM_CHUNK_SIZE` requests a chunk); vLLM
        shows its own progress bar."""
        s = self.sampling
        params = [
            self.sampling_params_cls(
                n=1,
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.top_k,
                min_p=s.min_p,
                max_tokens=s.max_tokens,
                seed=seed,
            )
            for seed in seeds
        ]
        requests = [{"prompt_token_ids": ids} for ids in prompts]
        for start in range(0, len(requests), VLLM_CHUNK_SIZE):
            end = start + VLLM_CHUNK_SIZE
            outputs = self.llm.generate(requests[start:end], sampling_params=params[start:end], use_tqdm=True)
            results = []
            for index, output in enumerate(outputs, start=start):
                sample = output.outputs[0]
                completion = Completion(sample.text, len(sample.token_ids), sample.finish_reason == "length")
                results.append((index, completion))
            yield results
