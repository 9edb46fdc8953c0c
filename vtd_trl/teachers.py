"""Where the distillation term's teacher signal comes from: a colocated model or a `vllm serve` teacher server.

A teacher scores a batch of sequences (`prompt + completion`, a `vtd_trl.packing.Batch`) at every completion
position and returns one of two signals, keyed by name, each with the batch's rows and completion positions as its
leading dimensions `[n, L]`:

- dense (`top_k is None`, local teacher only): `hidden`, the teacher's last hidden states `[n, L, H]` (its logit
  multiplier applied), for the fused full-vocabulary losses with the teacher's LM head;
- sparse: `topk_logprobs` `[n, L, k]` (float32, `-inf` in padding slots) and `topk_ids` `[n, L, k]`, the teacher's
  top-k log-probabilities, for `vtd_trl.losses.sparse_distillation_loss`.
"""

import math
import time

import requests
import torch
from accelerate import Accelerator
from requests.adapters import HTTPAdapter
from trl.generation.vllm_client import VLLMClient
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.utils import get_config_model_id, maybe_gather_lm_head_ctx
from urllib3.util.retry import Retry

from .losses import topk_logprobs
from .packing import Batch, forward_through, full_tensor, hidden_states, max_over_processes, micro_batches


class Teacher:
    """The interface distilled completions are scored through (see the module docstring for `signal`)."""

    top_k: int | None = None
    #: Rows of the vocabulary its token ids index (None: all of the student's LM head).
    vocab_size: int | None = None
    #: Whether `signal` is a collective that every process must call as many times as the others (a sharded model).
    collective: bool = False

    @property
    def name(self) -> str:
        """The teacher's model id, for the model card."""
        raise NotImplementedError

    def signal(self, batch) -> dict[str, torch.Tensor] | None:
        """The teacher's signal on `batch`; None when no process has a sequence to score (collective teachers)."""
        raise NotImplementedError


class LocalTeacher(Teacher):
    """A frozen model colocated with the student, run through its wrapper's forward (DDP, ZeRO-3, FSDP2 aware)."""

    collective = True

    def __init__(
        self,
        model,
        accelerator: Accelerator,
        top_k: int | None = None,
        temperature: float = 1.0,
        vocab_size: int | None = None,
    ):
        self.model, self.accelerator = model, accelerator
        self.top_k, self.temperature, self.vocab_size = top_k, temperature, vocab_size

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    @property
    def name(self) -> str:
        return get_config_model_id(self.unwrapped.config)

    @property
    def head_weight(self) -> torch.Tensor:
        """The LM head the dense signal's `hidden` states are read with (sharded under ZeRO-3 and FSDP2)."""
        return self.unwrapped.get_output_embeddings().weight

    @torch.no_grad()
    def signal(self, batch: Batch) -> dict[str, torch.Tensor] | None:
        # A sharded teacher needs every process in its forward, so one process's need is everyone's.
        if not max_over_processes(self.accelerator, int(len(batch) > 0)):
            return None
        unwrapped = self.unwrapped
        scored = batch if len(batch) else batch.dummy()
        hidden = forward_through(self.model, unwrapped, hidden_states, unwrapped, scored, self.accelerator.autocast)
        hidden = hidden[: len(batch)]
        if self.top_k is None:
            return {"hidden": hidden}
        with maybe_gather_lm_head_ctx(self.head_weight):
            weight = full_tensor(self.head_weight)
            logprobs, ids = topk_logprobs(hidden, weight[: self.vocab_size], self.top_k, temperature=self.temperature)
        return {"topk_logprobs": logprobs, "topk_ids": ids.int()}

    @torch.no_grad()
    def generate(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, eos_token_ids, pad_id
    ):
        """The teacher's greedy completion of each left-padded prompt, as token ids ending at the first EOS (or cut at
        `max_new_tokens`). A collective under ZeRO-3 and FSDP2: every process calls it, with prompts or none."""
        if not max_over_processes(self.accelerator, len(prompt_ids)):
            return []
        rows = len(prompt_ids)
        if rows == 0:  # one dummy prompt, so that this process joins the others' gathers
            prompt_ids = torch.full((1, 1), pad_id, dtype=torch.long, device=self.accelerator.device)
            prompt_mask = torch.ones_like(prompt_ids)
        with unwrap_model_for_generation(self.model, self.accelerator) as unwrapped:
            out = unwrapped.generate(
                input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens, do_sample=False,
                eos_token_id=list(eos_token_ids), pad_token_id=pad_id,
            )  # fmt: skip
        completions = []
        for ids in out[:rows, prompt_ids.shape[1] :].tolist():
            end = next((k for k, token in enumerate(ids) if token in eos_token_ids), None)
            completions.append(ids if end is None else ids[: end + 1])
        return completions


@torch.no_grad()
def generation_signal(
    teacher: Teacher, batch: Batch, rows: torch.Tensor, shape: tuple, size: int, accelerator: Accelerator
) -> dict[str, torch.Tensor]:
    """The teacher's signal on `batch`, the packed rows `rows` of a generation batch of completions `shape`, scored
    once, `size` rows a forward, and stored as `vtd_teacher_<name>` tensors `[*shape, ...]` beside the completions
    (zeros, or `-inf` log-probs, elsewhere). Empty when no process has a row to score."""
    parts = micro_batches(batch, size, accelerator) if teacher.collective else [(slice(None), batch)]
    stored = {}
    for part, chunk in parts:
        signal = teacher.signal(chunk)
        if signal is None:
            return {}
        for name, value in signal.items():
            if name not in stored:
                fill = -math.inf if name == "topk_logprobs" else 0
                stored[name] = torch.full((*shape, *value.shape[2:]), fill, dtype=value.dtype, device=rows.device)
            stored[name][rows[part], : value.shape[1]] = value
    return {f"vtd_teacher_{name}": value for name, value in stored.items()}


def stored_signal(inputs: dict, rows: torch.Tensor, accelerator: Accelerator) -> dict[str, torch.Tensor] | None:
    """The `generation_signal` stored in a micro-batch's `inputs`, at its `rows` (the distilled ones, in order);
    None when nothing was stored, or for a dense signal when no process has a row (every process agrees)."""
    stored = {key[len("vtd_teacher_") :]: value for key, value in inputs.items() if key.startswith("vtd_teacher_")}
    # The dense signal's head gather is collective; the sparse loss needs nothing from other processes.
    if not stored or ("hidden" in stored and not max_over_processes(accelerator, int(len(rows) > 0))):
        return None
    return {name: value[rows] for name, value in stored.items()}


class TeacherServerError(RuntimeError):
    """The teacher server could not be reached or did not answer a scoring request."""


class TeacherClient(VLLMClient):
    """TRL's `VLLMClient` for scoring only: per-request timeout and a retry policy of our own.

    Own constructor: `VLLMClient.__init__` requires vLLM installed here for the weight sync it prepares, which
    scoring never uses; this one sets up the same session, base URL and served model id. `check_server`,
    `get_sequence_logprobs` and its parsing are TRL's.
    """

    def __init__(self, base_url: str, *, connection_timeout: float, request_timeout: float, max_retries: int):
        self.base_url, self.request_timeout, self.max_retries = base_url.rstrip("/"), request_timeout, max_retries
        self.session = requests.Session()
        # urllib3 retries connection errors, read timeouts and transient 5xx, sleeping 0, 2, 4, 8, ... s in between.
        retry = Retry(
            total=max_retries,
            connect=max_retries,
            read=max_retries,
            status=max_retries,
            status_forcelist=[500, 502, 503, 504],
            backoff_factor=1.0,
            allowed_methods=["GET", "POST"],
            raise_on_status=False,
        )
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        self.communicator = None
        try:
            self.check_server(connection_timeout, retry_interval=min(2.0, connection_timeout))
        except (ConnectionError, requests.exceptions.ConnectionError) as error:  # TRL raises the latter
            raise TeacherServerError(
                f"The teacher server at {self.base_url} (`teacher_server_url` / `teacher_server_host` and "
                f"`teacher_server_port`) did not answer {self.base_url}/health within {connection_timeout} s "
                "(`teacher_server_timeout`). Start it first: `vllm serve <teacher> --max-logprobs <k>`, or fix the "
                "address."
            ) from error
        self.model = self._get(f"{self.base_url}/v1/models")["data"][0]["id"]

    def _get(self, url: str, **kwargs) -> dict:
        return super()._get(url, timeout=self.request_timeout, **kwargs)

    def _post(self, url: str, **kwargs) -> dict:
        return super()._post(url, timeout=self.request_timeout, **kwargs)


class ServerTeacher(Teacher):
    """A teacher served by `vllm serve`: teacher-forced top-k prompt log-probs of each sequence.

    Every process sends its own distilled rows: the answers (`L x k` log-probs and ids per sequence) are the bulk of
    the traffic, and routing them through one process would double it and parse all of them on one CPU.
    """

    def __init__(self, client: TeacherClient, top_k: int):
        self.client, self.top_k = client, top_k

    @classmethod
    def from_config(cls, args) -> "ServerTeacher":
        client = TeacherClient(
            args.teacher_server_base_url,
            connection_timeout=args.teacher_server_timeout,
            request_timeout=args.teacher_server_request_timeout,
            max_retries=args.teacher_server_max_retries,
        )
        return cls(client, args.vtd_distill_top_k)

    @property
    def name(self) -> str:
        return self.client.model

    def check(self, tokenizer, max_completion_length: int) -> None:
        """At start: the server's tokenizer is the student's, its context fits, and it returns `top_k` log-probs."""
        # vLLM has no endpoint for the whole vocabulary; a text that touches a spread of the student's tokens
        # tokenizes to the same ids only under the same vocabulary.
        probe = tokenizer.decode(list(range(0, len(tokenizer), max(1, len(tokenizer) // 2048))))
        answer = self._request("tokenize", "/tokenize", json={"prompt": probe, "add_special_tokens": False})
        expected = tokenizer(probe, add_special_tokens=False)["input_ids"]
        if answer["tokens"] != expected:
            first = next((i for i, (a, b) in enumerate(zip(answer["tokens"], expected)) if a != b), None)
            raise ValueError(
                f"The teacher server's model ({self.name} at {self.client.base_url}) tokenizes text differently from "
                f"the student's tokenizer ({len(answer['tokens'])} against {len(expected)} tokens for the same probe, "
                f"first difference at token {first}). Token-level distillation compares next-token distributions id "
                "by id: serve a teacher of the student's model family."
            )
        if answer.get("max_model_len") and answer["max_model_len"] <= max_completion_length:
            raise ValueError(
                f"The teacher server's context (`max_model_len={answer['max_model_len']}`) cannot hold a prompt and a "
                f"completion of `max_completion_length={max_completion_length}` tokens. Restart it with a "
                "`--max-model-len` of the longest prompt plus that."
            )
        self.signal_of_sequences([expected[:2]], [1], what="probe")

    def signal(self, batch) -> dict[str, torch.Tensor] | None:
        sequences, prompt_lengths = [], []
        for prompt_ids, prompt_mask, part_ids, part_mask in zip(
            batch.prompt_ids, batch.prompt_mask, batch.targets, batch.part_mask
        ):
            prompt = prompt_ids[prompt_mask.bool()].tolist()
            sequences.append(prompt + part_ids[part_mask.bool()].tolist())
            prompt_lengths.append(len(prompt))
        logprobs, ids = self.signal_of_sequences(sequences, prompt_lengths, width=batch.targets.shape[1])
        device = batch.targets.device
        return {"topk_logprobs": logprobs.to(device), "topk_ids": ids.to(device)}

    def signal_of_sequences(self, sequences, prompt_lengths, width: int | None = None, what: str = "score"):
        """`[n, width, k]` top-k log-probs and ids of each sequence's positions after its prompt."""
        width = max([len(s) - p for s, p in zip(sequences, prompt_lengths)], default=0) if width is None else width
        logprobs = torch.full((len(sequences), width, self.top_k), -math.inf)
        ids = torch.zeros((len(sequences), width, self.top_k), dtype=torch.int32)
        if not sequences:
            return logprobs, ids
        answer = self._request(
            what,
            "/v1/completions",
            call=lambda: self.client.get_sequence_logprobs(sequences, prompt_lengths, top_logprobs=self.top_k),
        )
        for row, (values, tokens) in enumerate(zip(answer["logprobs"], answer["logprob_token_ids"])):
            logprobs[row, : len(values)] = torch.tensor(values, dtype=torch.float32).reshape(-1, self.top_k)
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int32).reshape(-1, self.top_k)
        return logprobs, ids

    def _request(self, what: str, path: str, call=None, **kwargs):
        """One request, with urllib3's retries under it; anything left after them becomes one clear error."""
        client = self.client
        start = time.monotonic()
        try:
            return call() if call is not None else client._post(f"{client.base_url}{path}", **kwargs)
        except Exception as error:  # requests' ConnectionError / Timeout / RetryError, or TRL's "Request failed"
            text = str(error)
            hint = ""
            if "logprobs" in text and ("max" in text or "greater" in text):
                hint = f" Restart it with `--max-logprobs {self.top_k}` or more, or lower `vtd_distill_top_k`."
            stopped = " Training has not started."
            if what == "score":
                stopped = (
                    " Training stopped before this step's update; the checkpoints already saved are intact (resume "
                    "with `--resume_from_checkpoint`)."
                )
            raise TeacherServerError(
                f"The teacher server at {client.base_url}{path} failed a {what} request after "
                f"{client.max_retries} retries and {time.monotonic() - start:.0f} s "
                f"(`teacher_server_max_retries`, `teacher_server_request_timeout`): {text[:500]}.{hint}{stopped}"
            ) from error
