import copy
import inspect
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from accelerate.utils import DistributedType, gather_object, is_peft_model
from datasets import Dataset, IterableDataset
from torch.distributed.fsdp import FSDPModule
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from trl import GRPOTrainer
from trl.data_utils import is_conversational
from trl.kernels import ChunkedLogProbFunction
from trl.models import prepare_deepspeed
from trl.models.utils import _ForwardRedirection, disable_gradient_checkpointing, prepare_fsdp
from trl.trainer.utils import (
    create_model_from_path,
    disable_dropout_in_model,
    get_callable_name,
    get_config_model_id,
    maybe_gather_lm_head_ctx,
    pad,
    use_adapter,
)

from .config import VtDConfig
from .losses import check_backend, distillation_loss, dpo_loss, sparse_distillation_loss
from .model_card import CITATION, vtd_model_card
from .rewards import make_correctness_reward
from .teachers import LocalTeacher, ServerTeacher, _full_tensor

# Vocabulary columns per tile of the sequence log-probability kernel
_LOGPROB_CHUNK = 32768


class VtDTrainer(GRPOTrainer):
    """
    Trainer for Verification-then-Distillation (VtD): the student samples K completions per prompt, each is verified
    against the gold answer, correct ones are distilled from a frozen teacher (token-level divergence on the
    student's own chain of thought) and incorrect ones become DPO pairs against the dataset's reference solution.

    The loss of one generation batch is `vtd_distill_alpha * L_distill + vtd_contrast_beta * L_contrast`, with global
    normalisers (see `VtDConfig`), so the gradient does not depend on how the batch is split across processes and
    gradient-accumulation steps. Generation, distributed launch, PEFT, logging and checkpoints are GRPO's.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from vtd_trl import VtDConfig, VtDTrainer

    >>> dataset = Dataset.from_list(
    ...     [{"prompt": [{"role": "user", "content": "What is 2+3?"}], "answer": "5", "reference": "2+3=5. \\\\boxed{5}"}]
    ... )
    >>> trainer = VtDTrainer(
    ...     model="Qwen/Qwen3-1.7B",
    ...     teacher_model="Qwen/Qwen3-8B",
    ...     args=VtDConfig(output_dir="Qwen3-1.7B-VtD", num_generations=8),
    ...     train_dataset=dataset,
    ... )
    >>> trainer.train()
    ```

    Args:
        model: the student: a model id, a path, a `PreTrainedModel` or a `PeftModel`, as for `GRPOTrainer`.
        teacher_model: the frozen teacher: an id, a path or a `PreTrainedModel`. Defaults to
            `args.teacher_model_name_or_path`. Its vocabulary must be the student's (a larger padded head is fine).
            Leave it unset with a teacher server (`args.teacher_server_url`): the server then scores the distilled
            completions (`vtd_trl.teachers.ServerTeacher`, top-k log-probs), and no teacher model is loaded.
        args: a `VtDConfig`.
        train_dataset: rows with the columns `prompt`, `vtd_answer_column` and (for reference-chosen pairs)
            `vtd_reference_column`.
        reward_funcs: reward functions as in GRPO. The route of a completion is decided by the reward function named
            `correctness_reward` (1.0 correct, 0.0 incorrect, None unverifiable); when none is given, `vtd_trl`'s is
            used, reading `vtd_answer_column`. Other reward functions are computed and logged.
        teacher_processing_class: the teacher's tokenizer, used to check that both vocabularies match; loaded from
            the teacher's path when not given.
        **kwargs: `eval_dataset`, `processing_class`, `peft_config`, `callbacks`, ... as for `GRPOTrainer`.
    """

    _tag_names = ["trl", "vtd", "distillation"]
    _name = "VtD"
    _paper = {"title": "Verification-then-Distillation", "citation": CITATION}

    def __init__(
        self,
        model: "str | PreTrainedModel",
        teacher_model: "str | PreTrainedModel | None" = None,
        args: VtDConfig | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        reward_funcs=None,
        teacher_processing_class: PreTrainedTokenizerBase | None = None,
        **kwargs,
    ):
        if args is None:
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = VtDConfig(f"{name.split('/')[-1]}-VtD")
        if not isinstance(args, VtDConfig):
            raise TypeError(f"`args` must be a VtDConfig, got {type(args).__name__}. Build it with VtDConfig(...).")
        teacher_model = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        server = None
        if args.teacher_server_base_url is not None:
            if teacher_model is not None:
                raise ValueError(
                    f"Both a teacher server ({args.teacher_server_base_url}) and a local teacher (`teacher_model=`) "
                    "are given. Keep one."
                )
            server = ServerTeacher.from_config(args)  # reachable, before any model loads
        elif teacher_model is None:
            raise ValueError(
                "VtD needs a teacher: pass `teacher_model=` (an id, a path or a model), set "
                "`teacher_model_name_or_path` in the VtDConfig, or serve one (`teacher_server_url`)."
            )
        if teacher_model is not None and not isinstance(teacher_model, str) and args.teacher_model_init_kwargs:
            raise ValueError(
                "`teacher_model_init_kwargs` is set but the teacher is already instantiated; drop the kwargs or pass "
                "the teacher as an id or path."
            )
        self._check_columns(train_dataset, args)
        self._check_student(model, args, kwargs.get("peft_config"), kwargs.get("processing_class"))
        check_backend(args.vtd_distill_backend, args.device)
        reward_funcs, self._correctness_index = self._with_correctness_reward(reward_funcs, args)

        # The DPO reference is the initial student. With PEFT it is the base model (adapters disabled), otherwise a
        # frozen copy, taken before GRPO wraps the student.
        peft_config = kwargs.get("peft_config")
        reference_model = None
        if args.vtd_contrast_beta > 0 and peft_config is None:
            if isinstance(model, str):
                reference_model = create_model_from_path(model, **self._init_kwargs(args.model_init_kwargs, args))
            elif is_peft_model(model):
                model.add_adapter("ref", model.peft_config["default"])
                for name, param in model.named_parameters():
                    if ".default." in name:
                        model.get_parameter(name.replace(".default.", ".ref.")).data.copy_(param.data)
            elif is_deepspeed_zero3_enabled():  # a partitioned model can't be deep-copied: reload it, as GRPO does
                reference_model = self._reload_reference(model, args)
            else:
                reference_model = copy.deepcopy(model)

        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset, **kwargs)
        if self.aux_loss_enabled:
            warnings.warn(
                f"The student is a Mixture-of-Experts model with `router_aux_loss_coef={self.router_aux_loss_coef}` in "
                "its config; VtD's loss does not add the router load-balancing loss.",
                stacklevel=2,
            )

        self.teacher_model = None
        if server is not None:
            self._check_models(None, None)
            server.check(self._tokenizer, self.max_completion_length)
            self.teacher = server
        else:
            self.teacher_model = self._load_teacher(teacher_model, teacher_processing_class)
            teacher = self.accelerator.unwrap_model(self.teacher_model)
            vocab = min(m.config.get_text_config().vocab_size for m in (self.model, teacher))
            self.teacher = LocalTeacher(
                self.teacher_model, self, args.vtd_distill_top_k, args.vtd_distill_temperature, vocab
            )
        self.reference_model = None if reference_model is None else self._prepare_frozen(reference_model)
        self._forward_redirection = _ForwardRedirection()
        self._warned_template = False
        self._teacher_pool = ThreadPoolExecutor(max_workers=1) if server is not None else None

    def _load_teacher(self, teacher_model, teacher_processing_class):
        args = self.args
        if isinstance(teacher_model, str):
            init_kwargs = self._init_kwargs(args.teacher_model_init_kwargs, args)
            if args.teacher_model_revision is not None:
                init_kwargs.setdefault("revision", args.teacher_model_revision)
            # A frozen teacher needs no fp32 master copy: under mixed precision it loads in the compute dtype.
            compute_dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else self.model.dtype
            init_kwargs.setdefault("dtype", compute_dtype)
            teacher_model = create_model_from_path(teacher_model, **init_kwargs)
        self._check_models(teacher_model, teacher_processing_class)
        return self._prepare_frozen(teacher_model)

    # ------------------------------------------------------------------ setup

    @classmethod
    def _reload_reference(cls, model: PreTrainedModel, args: VtDConfig) -> PreTrainedModel:
        model_id = get_config_model_id(model.config)
        if not model_id:
            raise ValueError(
                "Under DeepSpeed ZeRO-3 the DPO reference (the initial student) is reloaded from the student's path, "
                f"but the student instance has none (`config._name_or_path={model_id!r}`). Save it first and pass "
                "the path as `model=`, or set `vtd_contrast_beta=0`."
            )
        init_kwargs = cls._init_kwargs(args.model_init_kwargs, args)
        init_kwargs.setdefault("dtype", model.dtype)
        return create_model_from_path(model_id, **init_kwargs)

    @staticmethod
    def _init_kwargs(init_kwargs, args) -> dict:
        init_kwargs = dict(init_kwargs or {})
        if args.distributed_state.distributed_type != DistributedType.NO:
            # Every distributed type (DDP, DeepSpeed, FSDP, ...) places the models itself: "auto" would fail or put
            # the whole model on one device.
            init_kwargs["device_map"] = None
        init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
        return init_kwargs

    @staticmethod
    def _check_columns(dataset, args: VtDConfig) -> None:
        columns = getattr(dataset, "column_names", None)
        if not columns:  # an iterable dataset may not know its columns
            return
        if args.vtd_answer_column not in columns:
            raise ValueError(
                f"The training dataset has no column {args.vtd_answer_column!r} with the gold answers (columns: "
                f"{columns}). Add it or set `vtd_answer_column` to the column that holds them."
            )
        needs_reference = args.vtd_chosen_source == "reference" and args.vtd_contrast_beta > 0
        if needs_reference and args.vtd_reference_column not in columns:
            raise ValueError(
                f"`vtd_chosen_source='reference'` needs the column {args.vtd_reference_column!r} (columns: "
                f"{columns}). Add it, set `vtd_reference_column`, or use `vtd_chosen_source='sibling'`."
            )

    @staticmethod
    def _check_student(model, args: VtDConfig, peft_config, processing_class) -> None:
        """Refuse, before anything loads, the students whose inputs VtD's own forward passes would drop."""
        adapters = model.peft_config.values() if not isinstance(model, str) and is_peft_model(model) else []
        if any(config.is_prompt_learning for config in [*adapters, *([peft_config] if peft_config else [])]):
            raise ValueError(
                "The student uses prompt-learning PEFT (prompt tuning, prefix tuning, P-tuning), whose virtual tokens "
                "VtD's forward passes skip (they run the backbone on the token ids alone). Use an adapter method "
                "such as LoRA (`peft.LoraConfig`)."
            )
        if isinstance(model, str):
            revision = (args.model_init_kwargs or {}).get("revision")
            config = AutoConfig.from_pretrained(model, revision=revision, trust_remote_code=args.trust_remote_code)
        else:
            config = model.config
        if isinstance(processing_class, ProcessorMixin) or getattr(config, "vision_config", None) is not None:
            raise ValueError(
                f"The student ({type(config).__name__}) is a vision-language model; VtD scores completions from the "
                "token ids alone and would drop the pixel inputs. Use a text-only student and a tokenizer as the "
                "`processing_class`."
            )

    @staticmethod
    def _with_correctness_reward(reward_funcs, args: VtDConfig) -> tuple[list, int]:
        if reward_funcs is None:
            reward_funcs = []
        elif not isinstance(reward_funcs, list):
            reward_funcs = [reward_funcs]
        names = [f if isinstance(f, str) else get_callable_name(f) for f in reward_funcs]
        if "correctness_reward" in names:
            return reward_funcs, names.index("correctness_reward")
        if args.reward_weights is not None:
            raise ValueError(
                "`reward_weights` is set but `reward_funcs` has no function named 'correctness_reward', so VtD would "
                "add its own and the weights would no longer line up. Include vtd_trl.rewards.correctness_reward in "
                "`reward_funcs` (and a weight for it), or unset `reward_weights`."
            )
        return [make_correctness_reward(args.vtd_answer_column), *reward_funcs], 0

    def _check_models(self, teacher: PreTrainedModel | None, teacher_processing_class) -> None:
        """The student's (and a local teacher's) LM heads are ones the fused losses read, with one vocabulary.

        A server teacher (`teacher=None`) has its vocabulary checked against the server (`ServerTeacher.check`)."""
        student_tokenizer = self._tokenizer
        if teacher is not None:
            self._check_vocabulary(teacher, teacher_processing_class)
        roles = [("student", self.model)] + ([("teacher", teacher)] if teacher is not None else [])
        for role, model in roles:
            inner = model.base_model.model if is_peft_model(model) else model
            if inner.base_model is inner:
                raise ValueError(
                    f"The {role} ({type(inner).__name__}) has no backbone under `base_model_prefix="
                    f"{inner.base_model_prefix!r}`, so `base_model` is the model itself and VtD cannot read its last "
                    "hidden states before the LM head. Use an `AutoModelForCausalLM` class whose `base_model` is the "
                    "decoder (e.g. `Qwen3ForCausalLM.model`)."
                )
            config = model.config.get_text_config()
            if config.vocab_size < len(student_tokenizer):
                raise ValueError(
                    f"The {role}'s LM head has {config.vocab_size} rows but the tokenizer has {len(student_tokenizer)} "
                    "tokens; the model and tokenizer do not belong together."
                )
            if getattr(config, "final_logit_softcapping", None):
                raise ValueError(
                    f"The {role} soft-caps its logits (`final_logit_softcapping={config.final_logit_softcapping}`), "
                    "which VtD's fused LM-head losses do not apply. Use a model whose logits are a multiple of "
                    "`hidden @ lm_head.weight.T` (Qwen3, Llama, Mistral, Granite, Cohere, ...)."
                )
            if model.get_output_embeddings().bias is not None:
                raise ValueError(f"The {role}'s LM head has a bias, which VtD's fused LM-head losses do not apply.")
        backend = self.args.vtd_distill_backend
        if backend == "naive" and is_deepspeed_zero3_enabled():
            raise ValueError(
                "`vtd_distill_backend='naive'` keeps the LM heads for its backward pass, which ZeRO-3 re-partitions. "
                "Use 'chunked' or 'liger' (or 'auto')."
            )

    def _check_vocabulary(self, teacher: PreTrainedModel, teacher_processing_class) -> None:
        student_tokenizer = self._tokenizer
        if teacher_processing_class is None:
            teacher_path = get_config_model_id(teacher.config)
            try:
                teacher_processing_class = AutoTokenizer.from_pretrained(
                    teacher_path,
                    revision=self.args.teacher_model_revision,
                    trust_remote_code=self.args.trust_remote_code,
                )
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"Could not load the teacher's tokenizer from {teacher_path!r} to check that teacher and student "
                    "share a vocabulary. Pass it as `teacher_processing_class=`."
                ) from error
        teacher_tokenizer = getattr(teacher_processing_class, "tokenizer", teacher_processing_class)
        student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
        if student_vocab != teacher_vocab:
            differing = sorted(set(student_vocab.items()) ^ set(teacher_vocab.items()), key=lambda kv: kv[1])[:5]
            raise ValueError(
                f"The teacher's vocabulary ({len(teacher_vocab)} tokens) differs from the student's "
                f"({len(student_vocab)} tokens), e.g. {differing}. Token-level distillation compares next-token "
                "distributions id by id, so both models must use the same tokenizer. Pick a teacher from the "
                "student's model family."
            )

    def _prepare_frozen(self, model: PreTrainedModel):
        """Freeze a teacher or reference model and place it the way GRPO places its reference model."""
        model.eval()
        model.requires_grad_(False)
        disable_dropout_in_model(model)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(model, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(model, self.accelerator)
        return self.accelerator.prepare_model(model, evaluation_mode=True)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """Write `README.md` in `output_dir`: base model, teacher, dataset, VtD hyperparameters, method, citation."""
        if not self.is_world_process_zero():
            return
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        card = vtd_model_card(
            model_name=model_name or Path(self.args.output_dir).name,
            base_model=get_config_model_id(self.model.config),
            teacher=self.teacher.name,
            dataset_name=dataset_name,
            hub_model_id=getattr(self, "hub_model_id", None),
            args=self.args,
            tags=sorted({*tags, *self._tag_names}),
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    # ------------------------------------------------------------------ routing

    def route(
        self, rewards: torch.Tensor, inputs: list[dict], generation: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decide which loss each completion feeds.

        Args:
            rewards: `[B]` correctness rewards of this process's completions (1.0 correct, 0.0 incorrect, NaN
                unverifiable, i.e. the gold answer could not be parsed).
            inputs: the `B` dataset rows the completions answer.
            generation: GRPO's generation output for these completions (`prompt_ids`, `completion_ids`,
                `completion_mask`, ...) with `vtd_truncated`, boolean `[B]`: the completion ends without EOS (cut by
                `max_completion_length`). Passed only to overrides that declare a `generation` parameter (or
                `**kwargs`), so `route(self, rewards, inputs)` overrides keep working.

        Returns:
            `(distill_mask, contrast_mask)`, boolean `[B]`: a completion in neither is skipped, one in both gets
            both losses. By default correct completions (reward >= 0.5) are distilled, incorrect ones contrasted,
            with `vtd_distill_incorrect` incorrect ones are distilled as well, and incorrect truncated ones follow
            `vtd_truncated_completions` (without `generation`, they count as incorrect).
        """
        verified = ~torch.isnan(rewards)
        correct = verified & (rewards >= 0.5)
        incorrect = verified & ~correct
        distill = correct | incorrect if self.args.vtd_distill_incorrect else correct
        contrast = incorrect
        policy = self.args.vtd_truncated_completions
        if generation is not None and policy != "contrast":
            cut = incorrect & generation["vtd_truncated"].to(rewards.device)
            contrast = contrast & ~cut
            distill = distill | cut if policy == "distill" else distill & ~cut
        return distill, contrast

    def _route_checked(self, rewards: torch.Tensor, inputs: list[dict], generation: dict):
        parameters = inspect.signature(self.route).parameters.values()
        if any(p.name == "generation" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            masks = self.route(rewards, inputs, generation=generation)
        else:
            masks = self.route(rewards, inputs)
        if not (isinstance(masks, tuple) and len(masks) == 2):
            raise TypeError(f"`route` must return (distill_mask, contrast_mask), got {type(masks).__name__}.")
        for name, mask in zip(("distill_mask", "contrast_mask"), masks):
            if not (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.shape == rewards.shape):
                raise TypeError(
                    f"`route` returned a {name} that is not a boolean tensor of shape {tuple(rewards.shape)}: "
                    f"{mask!r}."
                )
        return tuple(mask.to(rewards.device) for mask in masks)

    # ------------------------------------------------------------------ generation batch

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._correctness = rewards_per_func[:, self._correctness_index]  # all processes, in global order
        # This process's completions cut by `max_completion_length`, as GRPO's `completions/clipped_ratio` counts them
        eos_and_pad = {*self.eos_token_ids, self._tokenizer.pad_token_id}
        self._truncated = [not ids or ids[-1] not in eos_and_pad for ids in completion_ids_list]
        return rewards_per_func

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        # While generating, GRPO calls this for its importance-sampling terms (`old_per_token_logps`, vLLM's
        # correction), which VtD's loss does not read: skip the extra forward unless the correction is asked for.
        if not (self.use_vllm and self.vllm_importance_sampling_correction):
            return None, None, None
        return super()._get_per_token_logps_and_entropies(*args, **kwargs)

    def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
        output = super()._generate_and_score_completions(inputs)
        device = self.accelerator.device
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        batch_size = len(inputs)
        offset = self.accelerator.process_index * batch_size
        all_rewards = self._correctness
        rewards = all_rewards[offset : offset + batch_size]  # this process's rows
        output["vtd_truncated"] = torch.tensor(self._truncated, dtype=torch.bool, device=device)
        distill, contrast = self._route_checked(rewards.clone(), inputs, output)
        loss_mask = output["completion_mask"] * output.get("tool_mask", 1)
        # A completion with no token left to train on (e.g. masked by `mask_truncated_completions`) feeds no loss.
        trainable = loss_mask.sum(1) > 0
        distill, contrast = distill & trainable, contrast & trainable

        if self.args.vtd_contrast_beta > 0:
            chosen_ids, chosen_keys, chosen_cut, in_format = self._chosen_sequences(
                inputs, output, all_rewards, contrast, group_size
            )
            has_chosen = torch.tensor([ids is not None for ids in chosen_ids], device=device)
        else:
            chosen_ids, chosen_keys, chosen_cut = [None] * batch_size, [-1] * batch_size, [False] * batch_size
            in_format = [False] * batch_size
            has_chosen = torch.zeros(batch_size, dtype=torch.bool, device=device)
        pairs = contrast & has_chosen
        chosen_cut = contrast & torch.tensor(chosen_cut, dtype=torch.bool, device=device)
        chosen_ids = [ids if pair else None for ids, pair in zip(chosen_ids, pairs.tolist())]
        chosen_tensor, chosen_mask = self._pad_parts(chosen_ids, device)
        output["vtd_chosen_ids"] = chosen_tensor
        output["vtd_chosen_mask"] = chosen_mask
        output["vtd_chosen_key"] = torch.tensor(chosen_keys, device=device) * pairs - (~pairs).long()
        output["vtd_chosen_is_sibling"] = output["vtd_chosen_key"] >= len(all_rewards)  # a sibling's key, see below
        output["vtd_chosen_in_format"] = pairs & torch.tensor(in_format, dtype=torch.bool, device=device)
        output["vtd_distill"] = distill
        output["vtd_contrast"] = pairs
        # A cut completion's tokens are no target to imitate, even when its answer verified
        output["vtd_correct"] = (rewards >= 0.5) & ~output["vtd_truncated"] & trainable
        scored = distill if self.args.vtd_distill_alpha > 0 else torch.zeros_like(distill)
        if self._teacher_pool is not None:  # a server scores while the reference policy runs here
            pending = self._teacher_pool.submit(self._generation_teacher_signal, output, scored)
            output["vtd_ref_rejected_logps"], output["vtd_ref_chosen_logps"] = self._reference_logps(output, pairs)
            output.update(pending.result())
        else:
            if self._teacher_at_generation:
                output.update(self._generation_teacher_signal(output, scored))
            output["vtd_ref_rejected_logps"], output["vtd_ref_chosen_logps"] = self._reference_logps(output, pairs)

        # Global counts of the generation batch: the normalisers of `VtDConfig` (0-dim tensors survive the split)
        local = torch.stack(
            [
                torch.tensor(float(batch_size), device=device),
                (loss_mask * distill.unsqueeze(1)).sum().float(),
                pairs.sum().float(),
                distill.sum().float(),
                (~torch.isnan(rewards)).sum().float(),
                (contrast & ~has_chosen).sum().float(),
                (~(distill | pairs)).sum().float(),
                output["vtd_truncated"].sum().float(),
                chosen_cut.sum().float(),
                (pairs | chosen_cut).sum().float(),
            ]
        )
        reduced = self.accelerator.reduce(local, reduction="sum")
        num_seq, num_distill_tokens, num_pairs, num_distill, _, no_chosen, skipped = reduced[:7]
        truncated, chosen_truncated, chosen_candidates = reduced[7:].tolist()
        output["vtd_num_completions"] = num_seq
        output["vtd_num_distilled_tokens"] = num_distill_tokens
        output["vtd_num_pairs"] = num_pairs

        verified = all_rewards[~torch.isnan(all_rewards)]
        metrics = self._metrics[mode]
        metrics["vtd/accuracy"].append((verified >= 0.5).float().mean().item() if verified.numel() else float("nan"))
        metrics["vtd/distill_fraction"].append((num_distill / num_seq).item())
        metrics["vtd/contrast_fraction"].append((num_pairs / num_seq).item())
        metrics["vtd/skip_fraction"].append((skipped / num_seq).item())
        metrics["vtd/no_chosen_fraction"].append((no_chosen / num_seq).item())
        metrics["vtd/truncated_fraction"].append(truncated / num_seq.item())
        # Over the pairs that had a chosen sequence (kept, or dropped by `vtd_drop_truncated_chosen`)
        metrics["vtd/chosen_truncated_fraction"].append(
            chosen_truncated / chosen_candidates if chosen_candidates else float("nan")
        )
        return output

    @property
    def _teacher_at_generation(self) -> bool:
        return isinstance(self.teacher, ServerTeacher) or self.args.vtd_teacher_signal == "generation_batch"

    @torch.no_grad()
    def _generation_teacher_signal(self, output: dict, distill: torch.Tensor) -> dict[str, torch.Tensor]:
        """The teacher's signal on this process's distilled completions, once for the generation batch, as
        `vtd_teacher_<name>` tensors `[B, T, ...]` beside the completions (zeros, or `-inf` log-probs, elsewhere).
        Empty when no process distils."""
        rows = distill.nonzero().squeeze(-1)
        batch = _Batch.build(output, rows, rows[:0], self._tokenizer.pad_token_id, output.get("tool_mask"))
        size = len(batch)
        if self.teacher.collective:  # the same number of forwards on every process, each a micro-batch long
            size = (
                self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
            )
            num_parts = self._max_over_processes(-(-len(batch) // size))
        else:
            num_parts = 1
        stored = {}
        for k in range(num_parts):
            part = slice(k * size, (k + 1) * size)
            signal = self.teacher.signal(batch.rows(part).trimmed())
            if signal is None:
                return {}
            for name, value in signal.items():
                if name not in stored:
                    fill = -math.inf if name == "topk_logprobs" else 0
                    shape = (*output["completion_ids"].shape, *value.shape[2:])
                    stored[name] = torch.full(shape, fill, dtype=value.dtype, device=output["completion_ids"].device)
                stored[name][rows[part], : value.shape[1]] = value
        return {f"vtd_teacher_{name}": value for name, value in stored.items()}

    def _chosen_sequences(
        self, inputs, output, all_rewards, contrast, group_size
    ) -> tuple[list, list[int], list[bool], list[bool]]:
        """The chosen completion token ids of each row (None when it has none), a key naming that sequence,
        whether the chosen sequence found for the row ends without EOS (kept, or dropped with
        `vtd_drop_truncated_chosen`), and whether the chosen sequence is in the student's own format (a sibling, or a
        reference for which `_reference_in_format` holds)."""
        source = self.args.vtd_chosen_source
        batch_size = len(inputs)
        offset = self.accelerator.process_index * batch_size
        siblings = None
        if source != "reference":  # every process joins the gather, whatever its own rows need
            # A completion with tool output in it is no chosen sequence: the policy did not write those tokens.
            tool_mask = output.get("tool_mask", torch.ones_like(output["completion_mask"]))
            has_tool_output = ((tool_mask == 0) & output["completion_mask"].bool()).any(dim=1).tolist()
            local_ids = [
                [] if tools else ids[mask.bool()].tolist()
                for ids, mask, tools in zip(output["completion_ids"], output["completion_mask"], has_tool_output)
            ]
            siblings = [ids for chunk in gather_object([local_ids]) for ids in chunk]
        # NaN compares False: unverifiable completions are never chosen; nor are completions with no token left.
        correct = [
            bool(c) and (siblings is None or len(siblings[j]) > 0) for j, c in enumerate((all_rewards >= 0.5).tolist())
        ]
        drop = self.args.vtd_drop_truncated_chosen
        references: dict[int, list[int] | None] = {}
        reference_in_format: dict[int, bool] = {}

        def in_format(row, group) -> bool:
            if group not in reference_in_format:
                reference_in_format[group] = self._reference_in_format(
                    row["prompt"], row.get(self.args.vtd_reference_column)
                )
            return reference_in_format[group]

        # Each finder returns (ids or None, key, cut): cut is None when it found no candidate at all.
        def reference(row, group):
            if group not in references:
                references[group] = self._reference_completion_ids(
                    row["prompt"], row.get(self.args.vtd_reference_column)
                )
            ids = references[group]
            if ids is None:
                return None, -1, None
            is_cut = ids[-1] not in self.eos_token_ids
            return (None, -1, True) if is_cut and drop else (ids, group, is_cut)

        def sibling(row, group):
            is_cut = None
            for j in range(group * group_size, (group + 1) * group_size):
                if not correct[j]:
                    continue
                candidate = siblings[j][: self._max_chosen_length]
                whole = candidate[-1] in self.eos_token_ids
                if whole or not drop:  # the first correct sibling (that ends in EOS, when dropping cut ones)
                    return candidate, len(all_rewards) + j, not whole  # after every reference's key (its group)
                is_cut = True
            return None, -1, is_cut

        orders = {
            "reference": (reference,),
            "sibling": (sibling,),
            "reference_then_sibling": (reference, sibling),
            "sibling_then_reference": (sibling, reference),
        }
        chosen, keys, cut, formats = [], [], [], []
        for i, row in enumerate(inputs):
            group = (offset + i) // group_size
            ids, key, is_cut = None, -1, False
            if source == "auto":  # the reference first when it is in the student's format, else a sibling first
                finders = orders["reference_then_sibling" if in_format(row, group) else "sibling_then_reference"]
            else:
                finders = orders[source]
            for find in finders if contrast[i] else ():
                ids, key, found_cut = find(row, group)
                is_cut = is_cut if found_cut is None else found_cut
                if ids is not None:
                    break
            chosen.append(ids)
            keys.append(key)
            cut.append(is_cut)
            formats.append(ids is not None and (key >= len(all_rewards) or in_format(row, group)))
        return chosen, keys, cut, formats

    @property
    def _max_chosen_length(self) -> int:
        return self.args.vtd_max_reference_length or self.max_completion_length

    def _reference_completion_ids(self, prompt, reference: str | None) -> list[int] | None:
        """Token ids of the reference rendered as the assistant's turn, exactly as a completion would be sampled."""
        if not isinstance(reference, str) or not reference.strip():
            return None
        tokenizer = self._tokenizer
        if is_conversational({"prompt": prompt}):
            prefix = self._render(prompt, None)
            turn = self._render(prompt, "x")[len(prefix) :]
            full = self._render(prompt, self._reference_message(reference, turn))
            if full.startswith(prefix):
                ids = tokenizer(full[len(prefix) :], add_special_tokens=False)["input_ids"]
                end = next((k for k, token in enumerate(ids) if token in self.eos_token_ids), None)
                ids = ids if end is None else ids[: end + 1]
                return ids[: self._max_chosen_length]
            if not self._warned_template:
                self._warned_template = True
                warnings.warn(
                    "The chat template does not render an assistant turn as a continuation of the generation prompt; "
                    "the chosen sequences are the reference text followed by EOS.",
                    stacklevel=2,
                )
        ids = tokenizer(reference, add_special_tokens=False)["input_ids"] + [self.eos_token_ids[0]]
        return ids[: self._max_chosen_length]

    def _render(self, prompt, content: str | None) -> str:
        """The chat template's text of `prompt` with the generation prompt (`content` None) or with an assistant turn."""
        messages = prompt if content is None else [*prompt, {"role": "assistant", "content": content}]
        return self._tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=content is None,
            tokenize=False,
            tools=self.tools or None,
            chat_template=self.chat_template,
            **self.chat_template_kwargs,
        )

    def _reference_in_format(self, prompt, reference: str | None) -> bool:
        """Whether a reference is written in the format the student samples in: with its own think block when the
        chat template opens one for the answer (a thinking-mode model, as Qwen3's), any reference otherwise.

        A reference without its think block (human-written datasets such as GSM8K) is out of format for a thinking
        model, however `vtd_reference_format` places it.
        """
        if not isinstance(reference, str) or not reference.strip():
            return False
        if "</think>" in reference or not is_conversational({"prompt": prompt}):
            return True
        prefix = self._render(prompt, None)
        turn = self._render(prompt, "x")
        return not (turn.startswith(prefix) and _opens_think_block(turn[len(prefix) :]))

    def _reference_message(self, reference: str, rendered_turn: str) -> str:
        """The assistant content for a reference; `rendered_turn` is how the template renders a bare answer.

        A thinking-mode completion reasons inside `<think>` and answers after it. A reference given as the bare
        answer would follow an empty think block instead, and DPO would then reward closing the block at once.
        """
        style = self.args.vtd_reference_format
        thinking = _opens_think_block(rendered_turn)
        if "</think>" in reference or style == "answer" or (style == "auto" and not thinking):
            return reference
        final_line = reference.strip().splitlines()[-1]
        return f"<think>\n{reference.strip()}\n</think>\n\n{final_line}"

    def _pad_parts(self, parts: list[list[int] | None], device) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad a list of token-id lists (None counts as empty) into ids and mask of at least one column."""
        tensors = [torch.tensor(ids or [self._tokenizer.pad_token_id], dtype=torch.long) for ids in parts]
        masks = [torch.full((len(t),), int(bool(ids)), dtype=torch.long) for t, ids in zip(tensors, parts)]
        ids = pad(tensors, padding_value=self._tokenizer.pad_token_id, padding_side="right").to(device)
        return ids, pad(masks, padding_value=0, padding_side="right").to(device)

    @torch.no_grad()
    def _reference_logps(self, output: dict, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference-policy log-probs (temperature 1) of each pair's rejected and chosen sequences, `[B]` each.

        Computed once per generation batch; a chosen sequence shared by several pairs is scored once.
        """
        device = pairs.device
        rejected_logps = torch.zeros(pairs.shape, device=device)
        chosen_logps = torch.zeros(pairs.shape, device=device)
        rows = pairs.nonzero().squeeze(-1)
        keys = output["vtd_chosen_key"][rows]
        unique_keys, first = _first_occurrence(keys)
        chosen_rows = rows[first]
        batch = _Batch.build(output, rows, chosen_rows, self._tokenizer.pad_token_id, output.get("tool_mask"))
        size = self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
        # Every process runs the same number of forwards (ZeRO-3 and FSDP gather weights collectively).
        num_forwards = self._max_over_processes(-(-len(batch) // size))
        logps = []
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            for k in range(num_forwards):
                chunk = batch.rows(slice(k * size, (k + 1) * size)).trimmed()
                logps.append(self._reference_sequence_logps(chunk if len(chunk) else batch.dummy())[: len(chunk)])
        logps = torch.cat(logps) if logps else torch.zeros(0, device=device)
        rejected_logps[rows] = logps[: len(rows)]
        chosen_of_row = logps[len(rows) :][torch.searchsorted(unique_keys, keys)]
        chosen_logps[rows] = chosen_of_row
        return rejected_logps, chosen_logps

    def _reference_sequence_logps(self, batch: "_Batch") -> torch.Tensor:
        # Through the wrapper's forward, so FSDP unshards (and ZeRO-3 gathers) the parameters first.
        if self.reference_model is not None:
            unwrapped = self.accelerator.unwrap_model(self.reference_model)
            return self._forward_redirection(self.reference_model, unwrapped, self._sequence_logps, unwrapped, batch)
        unwrapped = self.accelerator.unwrap_model(self.model)
        with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
            return self._forward_redirection(self.model_wrapped, unwrapped, self._sequence_logps, unwrapped, batch)

    # ------------------------------------------------------------------ loss

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        unwrapped = self.accelerator.unwrap_model(model)
        # The whole loss runs inside the wrapper's forward, so DDP / FSDP / ZeRO-3 see one forward per micro-batch.
        loss, sums = self._forward_redirection(model, unwrapped, self._vtd_loss, unwrapped, inputs, mode)
        reduced = self.accelerator.reduce(sums, reduction="sum").tolist()
        distill_sum, contrast_sum, margin_sum, won, pairs, chosen_nll, nll_pairs, correct_nll, correct_tokens = reduced
        steps = self.args.steps_per_generation if mode == "train" else 1
        distill_norm, contrast_norm = self._normalizers(inputs)
        metrics = self._metrics[mode]
        metrics["vtd/distill_loss"].append(distill_sum * steps / distill_norm.item())
        metrics["vtd/contrast_loss"].append(contrast_sum * steps / contrast_norm.item())
        metrics["vtd/dpo_margin"].append(margin_sum / pairs if pairs else float("nan"))
        metrics["vtd/dpo_accuracy"].append(won / pairs if pairs else float("nan"))
        if self.args.vtd_chosen_nll_weight > 0:  # the chosen sequences' per-token NLL, averaged over their pairs
            metrics["vtd/chosen_nll"].append(chosen_nll / nll_pairs if nll_pairs else float("nan"))
        if self.args.vtd_correct_nll_weight > 0:  # per token, over the correct completions' tokens
            metrics["vtd/correct_nll"].append(correct_nll / correct_tokens if correct_tokens else float("nan"))
        return loss

    def _normalizers(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        args = self.args
        if args.vtd_distill_normalizer == "completion_tokens":
            distill = inputs["num_items_in_batch"]
        else:
            distill = inputs["vtd_num_distilled_tokens"]
        contrast = (
            inputs["vtd_num_completions"] if args.vtd_contrast_normalizer == "completions" else inputs["vtd_num_pairs"]
        )
        return distill.float().clamp(min=1.0), contrast.float().clamp(min=1.0)

    def _vtd_loss(self, student: PreTrainedModel, inputs: dict, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of one micro-batch, scaled like GRPO's DAPO loss so that DDP averaging and gradient accumulation
        add up to `alpha * L_distill + beta * L_contrast` of the whole generation batch."""
        args = self.args
        distill, pairs = inputs["vtd_distill"], inputs["vtd_contrast"]
        if args.vtd_distill_alpha == 0:
            distill = torch.zeros_like(distill)
        correct = inputs["vtd_correct"] if args.vtd_correct_nll_weight > 0 else torch.zeros_like(distill)
        rows = (distill | pairs | correct).nonzero().squeeze(-1)
        pair_keys = inputs["vtd_chosen_key"][pairs]
        unique_keys, first = _first_occurrence(pair_keys)
        chosen_rows = pairs.nonzero().squeeze(-1)[first]
        batch = _Batch.build(
            inputs, rows, chosen_rows, self._tokenizer.pad_token_id, loss_mask=inputs.get("tool_mask")
        )
        empty = len(batch) == 0
        batch = batch.dummy() if empty else batch  # a forward still runs, so every process joins the collectives
        hidden = self._hidden_states(student, batch)
        lm_head = student.get_output_embeddings()
        is_distilled = distill[rows]
        signal = self._micro_batch_teacher_signal(inputs, batch, rows, is_distilled)
        is_pair = pairs[rows]
        zero = hidden.new_zeros(())
        # A dense signal needs the teacher's head, gathered (ZeRO-3, FSDP2) only when some process distils.
        teacher_head = None
        if signal is not None and "hidden" in signal:
            teacher_head = self.accelerator.unwrap_model(self.teacher_model).get_output_embeddings().weight
        with maybe_gather_lm_head_ctx(lm_head.weight, teacher_head):
            weight = _trainable_head_weight(lm_head)
            # Gathered on every process or on none (FSDP2's full_tensor is a collective), rows or not
            teacher_weight = None if teacher_head is None else _full_tensor(teacher_head)
            # An exact zero that touches every trainable parameter keeps DDP's reducer complete on empty batches.
            loss = 0.0 * (hidden.sum() + weight.sum())
            distill_sum = zero
            if signal is not None and is_distilled.any():
                distill_sum = self._distill_sum(
                    hidden[: len(rows)][is_distilled],
                    weight,
                    batch.loss_mask[: len(rows)][is_distilled].bool(),
                    signal,
                    teacher_weight,
                )
            correct_nll_sum, correct_tokens = zero, zero
            if args.vtd_correct_nll_weight > 0:  # every process, rows or not, as the contrast term below
                correct_rows = correct[rows].nonzero().squeeze(-1)
                logps = _sequence_logps_from_hidden(hidden[correct_rows], weight, batch.rows(correct_rows))
                correct_nll_sum, correct_tokens = -logps.sum(), batch.loss_mask[correct_rows].sum()
            contrast_sum, margin_sum, won, nll_sum, nll_pairs = zero, zero, zero, zero, zero
            # Scored on every process, rows or not: the kernel's backward gathers the LM head under ZeRO-3, and a
            # process that skipped it would leave the others waiting.
            if args.vtd_contrast_beta > 0:
                num_pairs = int(is_pair.sum())
                pair_rows = is_pair.nonzero().squeeze(-1)
                scored = torch.cat([pair_rows, torch.arange(len(rows), len(batch), device=rows.device)])
                logps = _sequence_logps_from_hidden(hidden[scored], weight, batch.rows(scored))
                chosen_of_pair = torch.searchsorted(unique_keys, pair_keys)
                rejected, chosen = logps[:num_pairs], logps[num_pairs:][chosen_of_pair]
                ref_chosen = inputs["vtd_ref_chosen_logps"][pairs]
                ref_rejected = inputs["vtd_ref_rejected_logps"][pairs]
                # Token counts of each pair's sequences: the rejected completion's, then its chosen sequence's
                lengths = batch.loss_mask[scored].sum(1).to(logps.dtype).clamp(min=1.0)
                rejected_length, chosen_length = lengths[:num_pairs], lengths[num_pairs:][chosen_of_pair]
                if args.vtd_dpo_loss_type == "length_normalized":
                    chosen, ref_chosen = chosen / chosen_length, ref_chosen / chosen_length
                    rejected, ref_rejected = rejected / rejected_length, ref_rejected / rejected_length
                losses = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=args.vtd_dpo_beta)
                if args.vtd_chosen_nll_weight > 0:  # RPO: the chosen sequence's mean per-token NLL, in each pair
                    nll = -logps[num_pairs:][chosen_of_pair] / chosen_length
                    has_nll = torch.ones_like(nll)
                    if args.vtd_chosen_nll_source != "all":
                        column = {"sibling": "vtd_chosen_is_sibling", "in_format": "vtd_chosen_in_format"}
                        has_nll = inputs[column[args.vtd_chosen_nll_source]][pairs].to(nll.dtype)
                    losses = losses + args.vtd_chosen_nll_weight * has_nll * nll
                    nll_sum, nll_pairs = (has_nll * nll).sum().detach(), has_nll.sum()
                contrast_sum = losses.sum()
                margins = args.vtd_dpo_beta * ((chosen - ref_chosen) - (rejected - ref_rejected)).detach()
                margin_sum, won = margins.sum(), (margins > 0).float().sum()
        distill_norm, contrast_norm = self._normalizers(inputs)
        scale = self.accelerator.num_processes  # DDP averages gradients over processes
        if mode == "train":  # each micro-batch holds 1 / steps_per_generation of the generation batch
            scale = scale * self.args.steps_per_generation / self.current_gradient_accumulation_steps
        loss = loss + scale * (
            (args.vtd_distill_alpha * distill_sum + args.vtd_correct_nll_weight * correct_nll_sum) / distill_norm
            + args.vtd_contrast_beta * contrast_sum / contrast_norm
        )
        sums = [distill_sum, contrast_sum, margin_sum, won, is_pair.sum(), nll_sum, nll_pairs]
        sums = torch.stack([x.detach().float() for x in (*sums, correct_nll_sum, correct_tokens)])
        return loss, sums

    def _hidden_states(self, model: PreTrainedModel, batch: "_Batch") -> torch.Tensor:
        """Last hidden states that predict the tokens after the prompt, `[n, L, H]`."""
        if is_peft_model(model):
            model = model.base_model.model
        with self.accelerator.autocast():
            out = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        hidden = out.last_hidden_state[:, batch.prompt_length - 1 : -1]
        # `scale * (h @ W.T) == (scale * h) @ W.T`: scaling the hidden states applies the model's logit multiplier in
        # every kernel downstream (the fused losses and the log-prob kernel take hidden states, not logits).
        scale = _logit_scale(model.config)
        return hidden if scale == 1.0 else hidden * scale

    def _micro_batch_teacher_signal(self, inputs, batch: "_Batch", rows, is_distilled) -> dict | None:
        """The teacher's signal on the micro-batch's distilled rows (`[n, L, ...]`, in their order), stored at
        generation or computed now; None when no process distils (every process agrees)."""
        if not self._teacher_at_generation:
            return self.teacher.signal(batch.rows(is_distilled.nonzero().squeeze(-1)).trimmed())
        stored = {key[len("vtd_teacher_") :]: value for key, value in inputs.items() if key.startswith("vtd_teacher_")}
        # The dense signal's head gather is collective; the sparse loss needs nothing from other processes.
        if not stored or ("hidden" in stored and not self._max_over_processes(int(is_distilled.any()))):
            return None
        return {name: value[rows[is_distilled]] for name, value in stored.items()}

    def _distill_sum(self, hidden, weight, mask, signal: dict, teacher_weight) -> torch.Tensor:
        """Summed divergence of the distilled rows `[n, L, H]` against the teacher's signal (dense or top-k)."""
        args = self.args
        width = min(hidden.shape[1], next(iter(signal.values())).shape[1])  # beyond either, all is padding
        hidden, mask = hidden[:, :width], mask[:, :width]
        options = dict(beta=args.vtd_distill_beta, temperature=args.vtd_distill_temperature, num_items=1)
        if "hidden" in signal:
            teacher_hidden = signal["hidden"][:, :width]
            return distillation_loss(
                hidden, weight, teacher_hidden, teacher_weight, mask, backend=args.vtd_distill_backend, **options
            )
        vocab = min(weight.shape[0], self.teacher.vocab_size or weight.shape[0])
        return sparse_distillation_loss(
            hidden,
            weight,
            signal["topk_logprobs"][:, :width],
            signal["topk_ids"][:, :width],
            mask,
            vocab_size=vocab,
            **options,
        )

    def _max_over_processes(self, value: int) -> int:
        if self.accelerator.num_processes == 1:
            return value
        return int(self.accelerator.gather(torch.tensor([value], device=self.accelerator.device)).max())

    def _sequence_logps(self, model: PreTrainedModel, batch: "_Batch") -> torch.Tensor:
        head = model.get_output_embeddings()
        hidden = self._hidden_states(model, batch)
        with maybe_gather_lm_head_ctx(head.weight):
            return _sequence_logps_from_hidden(hidden, _full_tensor(head.weight), batch)


def _logit_scale(config) -> float:
    """The factor a model multiplies its `hidden @ lm_head.weight.T` logits by, read as TRL's DistillationTrainer does.

    Cohere's `logit_scale` and Muse's `output_multiplier` multiply, Falcon-H1's `lm_head_multiplier` multiplies,
    Granite's and MiniCPM3's `logits_scaling` divides (HyperCLOVA X's multiplies). None of them set means 1.0.
    """
    config = config.get_text_config()
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        if getattr(config, name, None) is not None:
            return float(getattr(config, name))
    scaling = getattr(config, "logits_scaling", None)
    if scaling is None:
        return 1.0
    return float(scaling) if config.model_type == "hyperclovax" else 1.0 / float(scaling)


def _trainable_head_weight(head: torch.nn.Module) -> torch.Tensor:
    """The student's whole LM-head weight for the fused losses, whose gradient reaches every process.

    Under FSDP2 a head wrapped as its own unit is never called, so FSDP would neither gather it nor reduce-scatter
    its gradient (`full_tensor()`'s backward keeps each process's own share). Unsharding the unit makes FSDP reduce
    the gradient and reshard the head at the end of the backward pass, as for a unit that ran.
    """
    if isinstance(head, FSDPModule) and torch.is_grad_enabled() and head.weight.requires_grad:
        head.unshard()
        return head.weight
    return _full_tensor(head.weight)


def _opens_think_block(rendered_turn: str) -> bool:
    """Whether the chat template renders an assistant answer after an opened think block (thinking mode, Qwen3)."""
    return rendered_turn.lstrip().startswith("<think>")


def _first_occurrence(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique keys and, for each, the position of its first occurrence in `keys`."""
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    positions = torch.arange(len(keys), device=keys.device)
    first = torch.full((len(unique),), len(keys), device=keys.device, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return unique, first


def _sequence_logps_from_hidden(hidden: torch.Tensor, weight: torch.Tensor, batch: "_Batch") -> torch.Tensor:
    """Summed temperature-1 log-probabilities of each sequence's tokens after the prompt, `[n]`."""
    mask = batch.loss_mask.bool()
    hidden = hidden[mask]
    # The kernel's logit tiles are in the hidden states' dtype: bf16 tiles err by ~0.03 nats a token, ~1.4 nats on a
    # 2,048-token sequence (scripts/bench/logprob_precision.py), so the DPO log-probs come from fp32 tiles. Only the
    # hidden states are upcast: the kernel upcasts the head one vocabulary tile at a time, and the head it saves for
    # its backward stays the model's own parameter (ZeRO-3 gathers it again there). `tf32=True` runs these GEMMs in
    # TF32, whose products of bf16 values are exact.
    hidden = hidden.float()
    with torch.autocast(hidden.device.type, enabled=False):
        logps = ChunkedLogProbFunction.apply(
            hidden, weight, None, batch.targets[mask], 1.0, _LOGPROB_CHUNK, None, 1.0, ("log_probs",)
        )[0]
    row = torch.arange(len(batch), device=mask.device).unsqueeze(1).expand_as(mask)[mask]
    return torch.zeros(len(batch), device=logps.device, dtype=logps.dtype).index_add(0, row, logps)


class _Batch:
    """Sequences `prompt + part` (part = a completion or a chosen sequence) packed for one forward pass."""

    def __init__(self, prompt_ids, prompt_mask, part_ids, part_mask, loss_mask):
        self.prompt_ids, self.prompt_mask = prompt_ids, prompt_mask
        self.targets, self.part_mask, self.loss_mask = part_ids, part_mask, loss_mask

    @classmethod
    def build(cls, inputs: dict, rows: torch.Tensor, chosen_rows: torch.Tensor, pad_id: int, loss_mask=None):
        """Completion sequences of `rows`, then chosen sequences of `chosen_rows`, sharing one padded length."""
        completion_loss = inputs["completion_mask"] * (1 if loss_mask is None else loss_mask)
        length = max(inputs["completion_ids"].shape[1], inputs["vtd_chosen_ids"].shape[1])

        def widen(x, value):
            return torch.nn.functional.pad(x, (0, length - x.shape[1]), value=value)

        part_ids = torch.cat(
            [widen(inputs["completion_ids"][rows], pad_id), widen(inputs["vtd_chosen_ids"][chosen_rows], pad_id)]
        )
        part_mask = torch.cat(
            [widen(inputs["completion_mask"][rows], 0), widen(inputs["vtd_chosen_mask"][chosen_rows], 0)]
        )
        loss = torch.cat([widen(completion_loss[rows], 0), widen(inputs["vtd_chosen_mask"][chosen_rows], 0)])
        prompt_rows = torch.cat([rows, chosen_rows])
        prompt_ids, prompt_mask = inputs["prompt_ids"][prompt_rows], inputs["prompt_mask"][prompt_rows]
        return cls(prompt_ids, prompt_mask, part_ids, part_mask, loss).trimmed()

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    @property
    def prompt_length(self) -> int:
        return self.prompt_ids.shape[1]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.targets], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.part_mask], dim=1)

    def trimmed(self) -> "_Batch":
        """The same sequences without the columns that are padding in every row: the generation batch is padded to
        its longest completion and prompt, a micro-batch only needs its own."""
        if len(self) == 0:
            return self
        start = int(self.prompt_mask.any(0).int().argmax())  # prompts are left-padded: the first column in use
        used = self.part_mask.any(0).nonzero()
        end = int(used.max()) + 1 if len(used) else 1  # parts are right-padded: one past the last column in use
        prompt = slice(min(start, self.prompt_length - 1), None)
        parts = (x[:, :end] for x in (self.targets, self.part_mask, self.loss_mask))
        return _Batch(self.prompt_ids[:, prompt], self.prompt_mask[:, prompt], *parts)

    def rows(self, index) -> "_Batch":
        return _Batch(
            *(x[index] for x in (self.prompt_ids, self.prompt_mask, self.targets, self.part_mask, self.loss_mask))
        )

    def dummy(self) -> "_Batch":
        """One sequence with nothing to score, for processes that must join a forward they have no rows for."""
        prompt_ids = self.prompt_ids.new_zeros((1, max(self.prompt_length, 1)))
        prompt_mask = torch.ones_like(prompt_ids)
        part = self.targets.new_zeros((1, max(self.targets.shape[1], 1)))
        return _Batch(prompt_ids, prompt_mask, part, torch.ones_like(part), torch.zeros_like(part))
