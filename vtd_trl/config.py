"""`VtDConfig`: every option of a VtD run, grouped teacher / route / loss / data, checked at construction."""

import os
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

DISTILL_BACKENDS = ("auto", "trl", "chunked", "liger", "naive")
CHOSEN_SOURCES = ("reference", "sibling", "reference_then_sibling", "sibling_then_reference", "auto")
DPO_LOSS_TYPES = ("sigmoid", "length_normalized")
CHOSEN_NLL_SOURCES = ("all", "sibling", "in_format")
DISTILL_NORMALIZERS = ("completion_tokens", "distilled_tokens")
CONTRAST_NORMALIZERS = ("completions", "pairs")
REFERENCE_FORMATS = ("auto", "reasoning", "answer")
TRUNCATED_ROUTES = ("contrast", "distill", "skip")
TEACHER_SIGNALS = ("generation_batch", "micro_batch")


@dataclass
class VtDConfig(GRPOConfig):
    r"""
    Configuration class for the [`VtDTrainer`].

    Extends [`~trl.GRPOConfig`] with the parameters of Verification-then-Distillation: the teacher, the weights and
    normalisers of the two loss terms, and the dataset columns they read. GRPO's fields keep their meaning:
    `num_generations` is the number K of completions sampled per prompt (unlike GRPO, K = 1 is allowed: no loss term
    of VtD compares the completions of a prompt), `temperature` the sampling temperature, and
    generation runs with transformers or vLLM exactly as in GRPO.

    Parameters:
        > Parameters that control the teacher

        teacher_model_name_or_path (`str`, *optional*):
            Model id or path of the teacher, used when the trainer's `teacher_model` argument is not given.
        teacher_model_revision (`str`, *optional*):
            Revision of the teacher (branch, tag or commit hash).
        teacher_model_init_kwargs (`str` or `dict[str, Any]`, *optional*):
            Keyword arguments for `AutoModelForCausalLM.from_pretrained` when the teacher is loaded from an id or
            path (a JSON string on the command line).
        teacher_server_url (`str`, *optional*):
            Base URL of a `vllm serve <teacher>` server (e.g. `"http://10.0.0.2:8000"`) that scores the distilled
            completions instead of a local teacher: teacher-forced top-k log-probs through TRL's `VLLMClient`. Start
            it with `--max-logprobs` >= `vtd_distill_top_k` (required with a server teacher). When set,
            `teacher_server_host` and `teacher_server_port` are ignored and no teacher model is loaded.
        teacher_server_host (`str`, *optional*):
            Host of the teacher server, used with `teacher_server_port` when `teacher_server_url` is not set.
        teacher_server_port (`int`, *optional*, defaults to `8000`):
            Port of the teacher server, used with `teacher_server_host`.
        teacher_server_timeout (`float`, *optional*, defaults to `240.0`):
            Seconds to wait at start for the teacher server to answer its health check (as `vllm_server_timeout`).
        teacher_server_request_timeout (`float`, *optional*, defaults to `600.0`):
            Seconds one scoring request may take before it is retried.
        teacher_server_max_retries (`int`, *optional*, defaults to `5`):
            Retries of a failed or timed-out scoring request (exponential backoff: 0, 2, 4, 8, ... seconds), after
            which training stops with an error; the checkpoints saved before stay as they are.
        vtd_teacher_signal (`str`, *optional*, defaults to `"generation_batch"`):
            When a local teacher scores the distilled completions: `"generation_batch"` (once per generation batch,
            stored with the buffered inputs, so `num_iterations > 1` does not repeat it) or `"micro_batch"` (in
            every micro-batch's loss; nothing is held between the two). A server teacher always scores once per
            generation batch. `"micro_batch"` is for runs where the stored signal does not fit beside the
            buffered inputs (about 1 GB per GPU at `recipes/qwen3.yaml`'s sizes, docs/teachers.md).
        vtd_distill_top_k (`int`, *optional*):
            When set, the divergence is taken over the teacher's top-k tokens plus one tail bucket
            (`vtd_trl.losses.sparse_distillation_loss`) instead of the full vocabulary. Required with a server teacher
            (it returns top-k log-probs only); with a local teacher it makes the two comparable at equal k.

        > Parameters that control the route

        vtd_distill_incorrect (`bool`, *optional*, defaults to `False`):
            Whether incorrect completions are also distilled from the teacher, in addition to their DPO pair. `False` is the published
            route; `True` measured best on both demo tasks and is in the tuned recipes (docs/benchmarks.md).
        vtd_truncated_completions (`str`, *optional*, defaults to `"distill"`):
            Route of an incorrect completion that was cut by `max_completion_length` (it ends without EOS): `"distill"`
            (distilled only, no DPO pair: the teacher corrects the chain it could not finish), `"contrast"` (a DPO pair
            like any incorrect completion, the published rule, which pushes toward short answers) or `"skip"` (neither).
            Correct ones are distilled. On the offline demo with half the completions cut, `"distill"` measured best
            (docs/method.md).

        > Parameters that control the loss

        vtd_distill_alpha (`float`, *optional*, defaults to `5.0`):
            Weight of the distillation term, computed on the completions routed to the teacher.
        vtd_contrast_beta (`float`, *optional*, defaults to `0.1`):
            Weight of the contrast (DPO) term, computed on the completions routed to a DPO pair.
        vtd_dpo_beta (`float`, *optional*, defaults to `0.1`):
            The DPO temperature `beta` inside the contrast term's sigmoid.
        vtd_dpo_loss_type (`str`, *optional*, defaults to `"sigmoid"`):
            The DPO loss of each pair: `"sigmoid"` (`-log sigmoid(beta * (chosen log-ratio - rejected log-ratio))`,
            the log-ratios summed over each sequence's tokens) or `"length_normalized"` (the same with each
            sequence's log-ratio divided by its token count, so that a short chosen sequence against a long rejected
            one is not a length preference; the log-ratios are then per token, so `vtd_dpo_beta` acts about a
            sequence length more weakly). In no recipe:
            kept for references much shorter than the completions, where it measured best on one demo cell (terse
            references, imperfect teacher; docs/benchmarks.md).
        vtd_chosen_nll_weight (`float`, *optional*, defaults to `0.0`):
            Weight `w` of the negative log-likelihood of each pair's chosen sequence added to its DPO loss, as
            TRL's `DPOConfig.rpo_alpha` (RPO, Pang et al., 2024): per pair `dpo_loss + w * NLL(chosen) / len(chosen)`,
            the NLL averaged over the chosen sequence's tokens. It is part of the contrast term (weighted by
            `vtd_contrast_beta`, divided by `vtd_contrast_normalizer`). `0.0` adds nothing.
        vtd_chosen_nll_source (`str`, *optional*, defaults to `"all"`):
            Which pairs' chosen sequences get the `vtd_chosen_nll_weight` term: `"all"`, `"sibling"` (only a
            chosen sequence that is a correct completion of the student's own) or `"in_format"` (a sibling, or a
            reference in the student's format as `vtd_chosen_source="auto"` judges it), so that a reference in
            another format than the student's is never imitated token by token.
        vtd_chosen_distill_weight (`float`, *optional*, defaults to `0.0`):
            Weight `w` of the teacher's divergence on each pair's chosen sequence (the reference or a correct sibling,
            teacher-forced: an off-policy signal that costs no generation), added to the distillation term:
            `L_distill = (D(completions) + w * D(chosen sequences of the pairs)) / vtd_distill_normalizer`, one
            chosen sequence per pair. Scored by the teacher in each micro-batch's loss. `0.0` adds nothing.
        vtd_distill_beta (`float`, *optional*, defaults to `0.0`):
            Interpolation of the token-level divergence: `0.0` is the forward KL(teacher || student), `1.0` the
            reverse KL(student || teacher), values in between the generalized Jensen-Shannon divergence.
        vtd_distill_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature dividing both the teacher's and the student's logits in the distillation term. In no recipe: kept as
            in TRL's distillation trainers, for teachers whose distribution is too peaked to teach from.
        vtd_distill_entropy_gap (`float`, *optional*, defaults to `0.0`):
            Weighs each distilled token by `2 * sigmoid(a * (H_student - H_teacher))`, `a` this value, from the
            entropies of both models' distributions at that token (held constant in the gradient): tokens where the
            student is less sure than the teacher count up to twice, tokens where it is surer down to nothing.
            `0.0` weighs every token 1. Needs the teacher's whole distribution (no `vtd_distill_top_k`) and the
            `"chunked"` or `"naive"` backend (`"auto"` is then `"chunked"`).
        vtd_distill_backend (`str`, *optional*, defaults to `"auto"`):
            How the distillation term is computed: `"trl"` (TRL's chunked kernel, that of its `DistillationTrainer`),
            `"chunked"` (ours: chunked over tokens, gradients computed in the forward pass), `"liger"` (Liger-Kernel's
            fused linear JSD), `"naive"` (full logits; for tests and debugging) or `"auto"` (`"trl"` on CUDA,
            `"chunked"` elsewhere: the fastest of each, measured in docs/performance.md). Only `"naive"`
            materializes `[tokens, vocab]` logits.
        vtd_distill_normalizer (`str`, *optional*, defaults to `"completion_tokens"`):
            What the distillation sum is divided by: `"completion_tokens"` (all completion tokens of the generation
            batch) or `"distilled_tokens"` (only the tokens of distilled completions). The second is the
            literal per-term mean of the published method, kept to reproduce it; it measured lower (docs/method.md).
        vtd_contrast_normalizer (`str`, *optional*, defaults to `"completions"`):
            What the contrast sum is divided by: `"completions"` (all completions of the generation batch) or
            `"pairs"` (only the DPO pairs). As for
            `vtd_distill_normalizer`, the second is the literal reading of the published method.

        > Parameters that control the data

        vtd_answer_column (`str`, *optional*, defaults to `"answer"`):
            Dataset column holding the gold answer that completions are verified against.
        vtd_reference_column (`str`, *optional*, defaults to `"reference"`):
            Dataset column holding the reference chain of thought, the chosen side of the DPO pairs.
        vtd_chosen_source (`str`, *optional*, defaults to `"reference"`):
            Where the chosen sequence of a DPO pair comes from: `"reference"` (the reference column), `"sibling"`
            (a correct completion of the same prompt), `"reference_then_sibling"` (the reference when the row has
            one, else a sibling) or `"sibling_then_reference"` (a correct sibling when the prompt has one, else the
            reference: the chosen sequence is in the student's own format whenever one of its samples is right) or
            `"auto"` (`"reference_then_sibling"` for a reference in the student's format, with its own `<think>`
            block when the chat template opens one, `"sibling_then_reference"` for one without, such as GSM8K's).
            A pair without a chosen sequence is skipped and counted.
        vtd_reference_format (`str`, *optional*, defaults to `"auto"`):
            Where a reference without its own `<think>` block goes in the chosen sequence, for chat templates with a
            thinking block (Qwen3): `"reasoning"` (inside the think block, its last line repeated as the answer, the
            shape of a thinking-mode completion), `"answer"` (the visible answer after an empty think block, the
            template's own rendering) or `"auto"` (`"reasoning"` when the prompt leaves thinking on). `"answer"` is in
            no recipe: kept for a model trained to answer with thinking off.
        vtd_max_reference_length (`int`, *optional*):
            Maximum number of tokens of a chosen sequence (after the prompt); longer ones are truncated. Defaults to
            `max_completion_length`. For references longer than the student's completions may be; on the demo, 96
            tokens (no terse reference cut) measured no gain over 64 (docs/benchmarks.md).
        vtd_chosen_teacher_generation (`bool`, *optional*, defaults to `False`):
            Whether a pair that finds no chosen sequence where `vtd_chosen_source` looks (no reference, no correct
            sibling) takes the teacher's greedy completion of its prompt (up to `vtd_max_reference_length` tokens),
            when that verifies against the gold answer: the published chosen priority ends with it. One generation
            per such prompt and process, a collective under ZeRO-3 and FSDP2; a local teacher only.
        vtd_drop_truncated_chosen (`bool`, *optional*, defaults to `False`):
            Whether a chosen sequence that does not end in EOS (a reference cut by `vtd_max_reference_length`, or a
            sibling cut by `max_completion_length`) is dropped: the pair then falls back to a sibling when
            `vtd_chosen_source` allows one, else it is skipped and counted in `vtd/no_chosen_fraction`. In no recipe:
            kept for datasets whose long references would otherwise be taught cut before their answer.

    > [!NOTE]
    > These parameters have default values different from [`~trl.GRPOConfig`]:
    > - `vllm_importance_sampling_correction`: Defaults to `False` instead of `True`. VtD has no policy-gradient
    >   term for the correction to act on, so the extra forward pass it needs is skipped.
    """

    _VALID_DICT_FIELDS = GRPOConfig._VALID_DICT_FIELDS + ["teacher_model_init_kwargs"]

    # Parameters whose default values are overridden from GRPOConfig
    vllm_importance_sampling_correction: bool = field(
        default=False,
        metadata={
            "help": "Whether to correct for the mismatch between vLLM's and the trainer's log-probabilities. VtD has "
            "no policy-gradient term for the correction to act on, so it is off by default."
        },
    )

    # Parameters that control the teacher
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Model id or path of the teacher, used when the trainer gets no `teacher_model`."},
    )
    teacher_model_revision: str | None = field(
        default=None,
        metadata={"help": "Revision of the teacher model (branch name, tag or commit hash)."},
    )
    teacher_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `AutoModelForCausalLM.from_pretrained` when the teacher is loaded from an "
            "id or path (a JSON string on the command line)."
        },
    )
    teacher_server_url: str | None = field(
        default=None,
        metadata={
            "help": "Base URL of a `vllm serve` teacher server (e.g. 'http://10.0.0.2:8000') that scores the distilled "
            "completions (top-k log-probs) instead of a local teacher. Needs `vtd_distill_top_k`."
        },
    )
    teacher_server_host: str | None = field(
        default=None,
        metadata={
            "help": "Host of the teacher server, with `teacher_server_port`, when `teacher_server_url` is unset."
        },
    )
    teacher_server_port: int = field(
        default=8000,
        metadata={"help": "Port of the teacher server, used with `teacher_server_host`."},
    )
    teacher_server_timeout: float = field(
        default=240.0,
        metadata={"help": "Seconds to wait at start for the teacher server to answer its health check."},
    )
    teacher_server_request_timeout: float = field(
        default=600.0,
        metadata={"help": "Seconds one scoring request to the teacher server may take before it is retried."},
    )
    teacher_server_max_retries: int = field(
        default=5,
        metadata={
            "help": "Retries (exponential backoff) of a failed or timed-out teacher-server request before training "
            "stops with an error."
        },
    )
    vtd_teacher_signal: str = field(
        default="generation_batch",
        metadata={
            "help": "When a local teacher scores the distilled completions: 'generation_batch' (once, stored with the "
            "buffered inputs) or 'micro_batch' (in every micro-batch's loss).",
            "choices": list(TEACHER_SIGNALS),
        },
    )
    vtd_distill_top_k: int | None = field(
        default=None,
        metadata={
            "help": "Distil over the teacher's top-k tokens plus a tail bucket instead of the full vocabulary. "
            "Required with a server teacher."
        },
    )

    # Parameters that control the route
    vtd_distill_incorrect: bool = field(
        default=False,
        metadata={"help": "Whether incorrect completions are distilled too, in addition to their DPO pair."},
    )
    vtd_truncated_completions: str = field(
        default="distill",
        metadata={
            "help": "Route of an incorrect completion cut by `max_completion_length`: 'distill' (distilled only, no "
            "DPO pair), 'contrast' (a DPO pair, the published rule) or 'skip'.",
            "choices": list(TRUNCATED_ROUTES),
        },
    )

    # Parameters that control the loss
    vtd_distill_alpha: float = field(
        default=5.0,
        metadata={"help": "Weight of the distillation term (completions routed to the teacher)."},
    )
    vtd_contrast_beta: float = field(
        default=0.1,
        metadata={"help": "Weight of the contrast (DPO) term (completions routed to a DPO pair)."},
    )
    vtd_dpo_beta: float = field(
        default=0.1,
        metadata={"help": "DPO temperature `beta` inside the contrast term's sigmoid."},
    )
    vtd_dpo_loss_type: str = field(
        default="sigmoid",
        metadata={
            "help": "DPO loss of each pair: 'sigmoid' (summed log-ratios) or 'length_normalized' (each sequence's "
            "log-ratio divided by its token count).",
            "choices": list(DPO_LOSS_TYPES),
        },
    )
    vtd_chosen_nll_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the chosen sequence's per-token NLL added to each pair's DPO loss (RPO, TRL's "
            "`rpo_alpha`), inside the contrast term. 0.0 adds nothing."
        },
    )
    vtd_chosen_nll_source: str = field(
        default="all",
        metadata={
            "help": "Pairs whose chosen sequence gets the NLL term: 'all', 'sibling' (the student's own correct "
            "completions) or 'in_format' (siblings and references in the student's format).",
            "choices": list(CHOSEN_NLL_SOURCES),
        },
    )
    vtd_chosen_distill_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the teacher's divergence on each pair's chosen sequence (teacher-forced), added to "
            "the distillation term. 0.0 adds nothing."
        },
    )
    vtd_distill_beta: float = field(
        default=0.0,
        metadata={
            "help": "Token-level divergence: 0.0 is forward KL(teacher||student), 1.0 reverse KL(student||teacher), "
            "in between the generalized JSD."
        },
    )
    vtd_distill_temperature: float = field(
        default=1.0,
        metadata={"help": "Temperature dividing the teacher's and the student's logits in the distillation term."},
    )
    vtd_distill_entropy_gap: float = field(
        default=0.0,
        metadata={
            "help": "a of the token weights 2 * sigmoid(a * (H_student - H_teacher)) in the distillation term; 0.0 "
            "weighs every token 1."
        },
    )
    vtd_distill_backend: str = field(
        default="auto",
        metadata={
            "help": "Distillation kernel: 'trl' (TRL's chunked kernel), 'chunked' (ours, chunked over tokens), "
            "'liger' (Liger fused linear JSD), 'naive' (full logits, for tests) or 'auto' (trl on CUDA, chunked "
            "elsewhere: the fastest of each, docs/performance.md).",
            "choices": list(DISTILL_BACKENDS),
        },
    )
    vtd_distill_normalizer: str = field(
        default="completion_tokens",
        metadata={
            "help": "Divide the distillation sum by all completion tokens of the generation batch "
            "('completion_tokens') or by the distilled tokens only ('distilled_tokens').",
            "choices": list(DISTILL_NORMALIZERS),
        },
    )
    vtd_contrast_normalizer: str = field(
        default="completions",
        metadata={
            "help": "Divide the contrast sum by all completions of the generation batch ('completions') or by the "
            "DPO pairs only ('pairs').",
            "choices": list(CONTRAST_NORMALIZERS),
        },
    )

    # Parameters that control the data
    vtd_answer_column: str = field(
        default="answer",
        metadata={"help": "Dataset column with the gold answer the completions are verified against."},
    )
    vtd_reference_column: str = field(
        default="reference",
        metadata={"help": "Dataset column with the reference chain of thought (the chosen side of DPO pairs)."},
    )
    vtd_chosen_source: str = field(
        default="reference",
        metadata={
            "help": "Chosen sequence of a DPO pair: 'reference' (the reference column), 'sibling' (a correct "
            "completion of the same prompt), 'reference_then_sibling', 'sibling_then_reference' or 'auto' (the "
            "reference first when it is in the student's format, else a sibling first).",
            "choices": list(CHOSEN_SOURCES),
        },
    )
    vtd_reference_format: str = field(
        default="auto",
        metadata={
            "help": "Where a reference without its own think block goes in the chosen sequence: 'reasoning' (inside "
            "the think block), 'answer' (after an empty think block) or 'auto' (reasoning when thinking is on).",
            "choices": list(REFERENCE_FORMATS),
        },
    )
    vtd_max_reference_length: int | None = field(
        default=None,
        metadata={
            "help": "Maximum number of tokens of a chosen sequence after the prompt; longer ones are truncated. "
            "Defaults to `max_completion_length`."
        },
    )
    vtd_chosen_teacher_generation: bool = field(
        default=False,
        metadata={
            "help": "Whether a pair that finds no chosen sequence takes the local teacher's greedy completion of its "
            "prompt, when that verifies against the gold answer."
        },
    )
    vtd_drop_truncated_chosen: bool = field(
        default=False,
        metadata={
            "help": "Whether a chosen sequence that does not end in EOS (cut by `vtd_max_reference_length` or "
            "`max_completion_length`) is dropped; its pair falls back to a sibling or is skipped."
        },
    )

    def __post_init__(self):
        self._grpo_post_init()
        self._check_values()
        self._check_combinations()
        self._check_teacher_options()
        self._refuse_unused_grpo_options()

    def _grpo_post_init(self) -> None:
        k = self.num_generations
        if k is not None and k < 1:
            raise ValueError(
                f"`num_generations` must be >= 1, got {k}. It is the number K of completions sampled per prompt."
            )
        if k == 1 and self.vllm_importance_sampling_correction:
            raise ValueError(
                "`vllm_importance_sampling_correction=True` with `num_generations=1`: VtD has no policy-gradient "
                "term for the correction to act on. Set it to False."
            )
        # GRPO refuses K = 1: its advantages are statistics of each prompt's group. VtD's losses use none (each
        # completion is routed by its own verdict), so at K = 1 GRPO's checks see one group a generation batch is
        # sure to hold, and K is put back after; GRPOConfig derives no field from K (tests/test_config.py).
        stand_in = (k, self.num_generations_eval)
        if k == 1:
            self.num_generations, self.num_generations_eval = self._one_group(), self.num_generations_eval or 1
        try:
            super().__post_init__()
        except ValueError:
            batch = self.generation_batch_size
            if batch is not None and k and batch % k:  # GRPO names a field the user may never have set
                raise ValueError(self._group_size_message()) from None
            raise
        finally:
            self.num_generations, self.num_generations_eval = stand_in

    def _one_group(self) -> int:
        """A group size >= 2 that divides the generation batch GRPOConfig will derive (for K = 1 only)."""
        if self.generation_batch_size is not None:
            group = self.generation_batch_size
        else:
            steps = self.steps_per_generation or self.gradient_accumulation_steps
            group = self.per_device_train_batch_size * steps
            if group == 1:  # one completion per process: the processes' generation batch is the smallest sure group
                group = int(os.environ.get("WORLD_SIZE", "1"))
        if group < 2:
            raise ValueError(
                "`num_generations=1` with a generation batch of one completion (per_device_train_batch_size=1, one "
                "process, gradient_accumulation_steps=1): GRPOConfig checks batches of at least 2 completions. Set "
                "gradient_accumulation_steps=2 or per_device_train_batch_size=2."
            )
        return group

    def _group_size_message(self) -> str:
        k, batch, world = self.num_generations, self.generation_batch_size, self.world_size
        fits = [d for d in range(1, min(batch, 64) + 1) if batch % d == 0]
        return (
            f"`num_generations={k}` (K completions per prompt) must divide the generation batch of {batch} "
            f"completions: `per_device_train_batch_size={self.per_device_train_batch_size}` x {world} "
            f"process{'' if world == 1 else 'es'} x `steps_per_generation={self.steps_per_generation}` (by default "
            f"`gradient_accumulation_steps`, {self.gradient_accumulation_steps}). K values that fit: {fits}; or make "
            f"per_device_train_batch_size a multiple of {k}."
        )

    def _check_values(self) -> None:
        if isinstance(self.teacher_model_init_kwargs, str):
            raise ValueError(
                f"`teacher_model_init_kwargs` must be a dict or a JSON object string, got "
                f'{self.teacher_model_init_kwargs!r}. Example: \'{{"dtype": "bfloat16"}}\'.'
            )
        for name in (
            "vtd_distill_alpha",
            "vtd_contrast_beta",
            "vtd_dpo_beta",
            "vtd_chosen_nll_weight",
            "vtd_chosen_distill_weight",
        ):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"`{name}` must be >= 0, got {value}. Set it to a non-negative weight.")
        if not 0.0 <= self.vtd_distill_beta <= 1.0:
            raise ValueError(
                f"`vtd_distill_beta` must be in [0, 1], got {self.vtd_distill_beta}. Use 0.0 for forward KL, "
                "1.0 for reverse KL, or a value in between for the generalized JSD."
            )
        if not self.vtd_distill_temperature > 0.0:
            raise ValueError(
                f"`vtd_distill_temperature` must be > 0, got {self.vtd_distill_temperature}. Use 1.0 to compare the "
                "models' own distributions."
            )
        if not self.temperature > 0.0:
            raise ValueError(f"`temperature` must be > 0, got {self.temperature}. VtD samples completions.")
        for name, allowed in (
            ("vtd_distill_backend", DISTILL_BACKENDS),
            ("vtd_chosen_source", CHOSEN_SOURCES),
            ("vtd_dpo_loss_type", DPO_LOSS_TYPES),
            ("vtd_chosen_nll_source", CHOSEN_NLL_SOURCES),
            ("vtd_distill_normalizer", DISTILL_NORMALIZERS),
            ("vtd_contrast_normalizer", CONTRAST_NORMALIZERS),
            ("vtd_reference_format", REFERENCE_FORMATS),
            ("vtd_truncated_completions", TRUNCATED_ROUTES),
            ("vtd_teacher_signal", TEACHER_SIGNALS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")

    def _check_combinations(self) -> None:
        if self.num_generations == 1 and self.vtd_chosen_source == "sibling" and self.vtd_contrast_beta > 0:
            raise ValueError(
                "`vtd_chosen_source='sibling'` with `num_generations=1`: a prompt's only completion has no sibling to "
                "be the chosen sequence. Use num_generations >= 2, or vtd_chosen_source='reference'."
            )
        if self.vtd_chosen_nll_weight > 0 and self.vtd_contrast_beta == 0:
            raise ValueError(
                f"`vtd_chosen_nll_weight={self.vtd_chosen_nll_weight}` with `vtd_contrast_beta=0`: the chosen "
                "sequences' NLL is part of the contrast term, which is then off. Set vtd_contrast_beta > 0, or "
                "vtd_chosen_nll_weight=0.0."
            )
        if self.vtd_chosen_distill_weight > 0 and not (self.vtd_contrast_beta > 0 and self.vtd_distill_alpha > 0):
            raise ValueError(
                f"`vtd_chosen_distill_weight={self.vtd_chosen_distill_weight}` with `vtd_contrast_beta="
                f"{self.vtd_contrast_beta}` and `vtd_distill_alpha={self.vtd_distill_alpha}`: the chosen sequences "
                "are the DPO pairs' and the term is part of the distillation; set both > 0, or "
                "vtd_chosen_distill_weight=0.0."
            )
        if self.vtd_distill_entropy_gap and (
            self.vtd_distill_backend not in ("auto", "chunked", "naive") or self.vtd_distill_top_k is not None
        ):
            raise ValueError(
                f"`vtd_distill_entropy_gap={self.vtd_distill_entropy_gap}` weighs tokens by the entropy of the "
                f"teacher's whole distribution, inside the chunked or naive backend; got `vtd_distill_backend="
                f"{self.vtd_distill_backend!r}` and `vtd_distill_top_k={self.vtd_distill_top_k}`. Set "
                "vtd_distill_backend='chunked' and no top-k, or vtd_distill_entropy_gap=0.0."
            )
        if self.vtd_chosen_teacher_generation and (self.teacher_server_base_url or self.vtd_contrast_beta == 0):
            raise ValueError(
                "`vtd_chosen_teacher_generation=True` generates with the local teacher the chosen sequences of DPO "
                f"pairs; got `teacher_server_url={self.teacher_server_base_url}` and `vtd_contrast_beta="
                f"{self.vtd_contrast_beta}`. Use a local teacher and vtd_contrast_beta > 0, or set it to False."
            )
        if self.vtd_chosen_nll_source != "all" and self.vtd_chosen_nll_weight == 0:
            raise ValueError(
                f"`vtd_chosen_nll_source={self.vtd_chosen_nll_source!r}` with `vtd_chosen_nll_weight=0`: there is no "
                "NLL term to restrict. Set vtd_chosen_nll_weight > 0, or leave vtd_chosen_nll_source='all'."
            )
        if self.vtd_max_reference_length is not None and self.vtd_max_reference_length < 1:
            raise ValueError(
                f"`vtd_max_reference_length` must be >= 1 or None, got {self.vtd_max_reference_length}. Leave it "
                "unset to use `max_completion_length`."
            )

    def _refuse_unused_grpo_options(self) -> None:
        # GRPO's own loss terms are replaced by VtD's; refuse the options that would silently do nothing.
        unused = {
            "beta": (self.beta != 0.0, "0.0; the contrast term's reference policy is the frozen initial student"),
            "entropy_coef": (self.entropy_coef != 0.0, "0.0"),
            "use_adaptive_entropy": (self.use_adaptive_entropy, "False"),
            "top_entropy_quantile": (self.top_entropy_quantile != 1.0, "1.0"),
            "cast_lm_head_to_fp32": (
                self.cast_lm_head_to_fp32,
                "False; VtD computes its DPO log-probs from fp32 logits and its distillation in fp32 already",
            ),
            "router_aux_loss_coef": (self.router_aux_loss_coef not in (None, 0.0), "None"),
        }
        for name, (is_set, fix) in unused.items():
            if is_set:
                raise ValueError(
                    f"`{name}={getattr(self, name)}` is a GRPO option that VtD does not use. Set it to {fix}."
                )

    @property
    def teacher_server_base_url(self) -> str | None:
        """The teacher server's base URL, from `teacher_server_url` or host and port; None without a server."""
        if self.teacher_server_url:
            return self.teacher_server_url.rstrip("/")
        if self.teacher_server_host:
            return f"http://{self.teacher_server_host}:{self.teacher_server_port}"
        return None

    def distill_options(self) -> dict:
        """The options of the distillation term, as `vtd_trl.losses.signal_distillation_loss` takes them."""
        return dict(
            beta=self.vtd_distill_beta,
            temperature=self.vtd_distill_temperature,
            backend=self.vtd_distill_backend,
            entropy_gap=self.vtd_distill_entropy_gap,
        )

    def _check_teacher_options(self) -> None:
        if self.vtd_distill_top_k is not None and self.vtd_distill_top_k < 1:
            raise ValueError(
                f"`vtd_distill_top_k` must be >= 1 or None, got {self.vtd_distill_top_k}. Leave it unset to distil "
                "over the full vocabulary (local teacher only)."
            )
        for name in ("teacher_server_timeout", "teacher_server_request_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0 seconds, got {getattr(self, name)}.")
        if self.teacher_server_max_retries < 0:
            raise ValueError(f"`teacher_server_max_retries` must be >= 0, got {self.teacher_server_max_retries}.")
        url = self.teacher_server_base_url
        if url is None:
            return
        check_teacher_source(url, self.teacher_model_name_or_path, "`teacher_model_name_or_path`")
        if self.vtd_distill_top_k is None:
            raise ValueError(
                f"The teacher server at {url} returns top-k log-probs only: set `vtd_distill_top_k` (e.g. 64), at "
                "most the server's `--max-logprobs`."
            )
        if self.vtd_distill_temperature != 1.0:
            raise ValueError(
                f"`vtd_distill_temperature={self.vtd_distill_temperature}` with a server teacher: vLLM computes prompt "
                "log-probs from the raw logits, before any temperature, so the teacher's side could not be tempered. "
                "Use 1.0, or a local teacher."
            )


def check_teacher_source(server_url: str | None, teacher, given_as: str, required: bool = False) -> None:
    """One teacher: a server or a local model (`teacher`, given as `given_as`), never both; with `required`, not
    neither (a config alone may leave the teacher to the trainer's `teacher_model=`)."""
    if server_url is not None and teacher is not None:
        name = teacher if isinstance(teacher, str) else type(teacher).__name__
        raise ValueError(
            f"Both a teacher server ({server_url}) and a local teacher ({given_as}: {name!r}) are set. Keep one: "
            "unset `teacher_server_url` / `teacher_server_host`, or the local teacher."
        )
    if required and server_url is None and teacher is None:
        raise ValueError(
            "VtD needs a teacher: pass `teacher_model=` (an id, a path or a model), set `teacher_model_name_or_path` "
            "(`--teacher_model_name_or_path`), or serve one (`teacher_server_url`, `--teacher_server_url`)."
        )
