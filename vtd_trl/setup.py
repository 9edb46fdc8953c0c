"""What `VtDTrainer` checks and loads before it trains: the inputs it refuses with a fix, the correctness reward it
routes by, and the frozen teacher and DPO reference, placed as GRPO places its own reference model."""

import copy
import warnings

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, is_peft_model
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, ProcessorMixin
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from trl.models import prepare_deepspeed
from trl.models.utils import prepare_fsdp
from trl.trainer.utils import create_model_from_path, disable_dropout_in_model, get_callable_name, get_config_model_id

from .config import VtDConfig
from .rewards import make_correctness_reward


def init_kwargs(kwargs: dict | None, args: VtDConfig) -> dict:
    """`from_pretrained` kwargs of a model VtD loads itself (teacher, reference)."""
    kwargs = dict(kwargs or {})
    if args.distributed_state.distributed_type != DistributedType.NO:
        # Every distributed type (DDP, DeepSpeed, FSDP, ...) places the models itself: "auto" would fail or put
        # the whole model on one device.
        kwargs["device_map"] = None
    kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    return kwargs


def load_teacher(teacher_model: "str | PreTrainedModel", args: VtDConfig, student_dtype) -> PreTrainedModel:
    """The teacher model, loaded from an id or path in the compute dtype, or as given."""
    if not isinstance(teacher_model, str):
        return teacher_model
    kwargs = init_kwargs(args.teacher_model_init_kwargs, args)
    if args.teacher_model_revision is not None:
        kwargs.setdefault("revision", args.teacher_model_revision)
    # A frozen teacher needs no fp32 master copy: under mixed precision it loads in the compute dtype.
    kwargs.setdefault("dtype", torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else student_dtype)
    return create_model_from_path(teacher_model, **kwargs)


def reference_model(model: "str | PreTrainedModel", args: VtDConfig, peft_config) -> PreTrainedModel | None:
    """The DPO reference, the initial student, taken before GRPO wraps the student: a frozen copy, or None when the
    student's adapters can be disabled instead (a `peft_config`) or the contrast term is off. A PEFT student gets a
    frozen copy of its adapter, named "ref"."""
    if args.vtd_contrast_beta == 0 or peft_config is not None:
        return None
    if isinstance(model, str):
        return create_model_from_path(model, **init_kwargs(args.model_init_kwargs, args))
    if is_peft_model(model):
        model.add_adapter("ref", model.peft_config["default"])
        for name, param in model.named_parameters():
            if ".default." in name:
                model.get_parameter(name.replace(".default.", ".ref.")).data.copy_(param.data)
        return None
    if is_deepspeed_zero3_enabled():  # a partitioned model can't be deep-copied: reload it, as GRPO does
        return reload_reference(model, args)
    return copy.deepcopy(model)


def reload_reference(model: PreTrainedModel, args: VtDConfig) -> PreTrainedModel:
    model_id = get_config_model_id(model.config)
    if not model_id:
        raise ValueError(
            "Under DeepSpeed ZeRO-3 the DPO reference (the initial student) is reloaded from the student's path, "
            f"but the student instance has none (`config._name_or_path={model_id!r}`). Save it first and pass "
            "the path as `model=`, or set `vtd_contrast_beta=0`."
        )
    kwargs = init_kwargs(args.model_init_kwargs, args)
    kwargs.setdefault("dtype", model.dtype)
    return create_model_from_path(model_id, **kwargs)


def prepare_frozen(model: PreTrainedModel, accelerator: Accelerator):
    """Freeze a teacher or reference model and place it the way GRPO places its reference model."""
    model.eval()
    model.requires_grad_(False)
    disable_dropout_in_model(model)
    if getattr(accelerator.state, "deepspeed_plugin", None) is not None:
        return prepare_deepspeed(model, accelerator)
    if getattr(accelerator.state, "fsdp_plugin", None) is not None:
        return prepare_fsdp(model, accelerator)
    return accelerator.prepare_model(model, evaluation_mode=True)


def with_correctness_reward(reward_funcs, args: VtDConfig) -> tuple[list, int]:
    """The reward functions with the one VtD routes by (named `correctness_reward`), and its index."""
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


def check_columns(dataset, args: VtDConfig) -> None:
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
    if not hasattr(dataset, "__len__") or len(dataset) == 0:
        return
    rows, answer = len(dataset), args.vtd_answer_column
    no_answer = sum(_blank(value) for value in dataset[answer])
    if no_answer == rows:
        raise ValueError(
            f"Every one of the {rows} rows has an empty gold answer in {answer!r} (`vtd_answer_column`): no completion "
            "could be verified, so VtD would train on nothing. Fill the column, or set `vtd_answer_column` to the one "
            "that holds the answers."
        )
    if no_answer:
        warnings.warn(
            f"{no_answer} of {rows} rows have an empty gold answer in {answer!r}: their completions cannot be verified "
            "and are skipped (counted in vtd/skip_fraction).",
            stacklevel=3,
        )
    reads_reference = args.vtd_contrast_beta > 0 and args.vtd_chosen_source != "sibling"
    if reads_reference and args.vtd_reference_column in columns:
        no_reference = sum(_blank(value) for value in dataset[args.vtd_reference_column])
        fallback = "" if args.vtd_chosen_source == "reference" else ", unless a correct sibling stands in"
        if no_reference:
            warnings.warn(
                f"{no_reference} of {rows} rows have an empty reference in {args.vtd_reference_column!r}: their wrong "
                f"completions will have no chosen sequence and no DPO pair{fallback} (counted in "
                "vtd/no_chosen_fraction).",
                stacklevel=3,
            )


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_student(model, args: VtDConfig, peft_config, processing_class) -> None:
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


def check_models(student, teacher, tokenizer, args: VtDConfig, teacher_processing_class=None) -> None:
    """The student's (and a local teacher's) LM heads are ones the fused losses read, with one vocabulary.

    A server teacher (`teacher=None`) has its vocabulary checked against the server (`ServerTeacher.check`)."""
    if teacher is not None:
        check_vocabulary(teacher, tokenizer, args, teacher_processing_class)
    for role, model in [("student", student)] + ([("teacher", teacher)] if teacher is not None else []):
        inner = model.base_model.model if is_peft_model(model) else model
        if inner.base_model is inner:
            raise ValueError(
                f"The {role} ({type(inner).__name__}) has no backbone under `base_model_prefix="
                f"{inner.base_model_prefix!r}`, so `base_model` is the model itself and VtD cannot read its last "
                "hidden states before the LM head. Use an `AutoModelForCausalLM` class whose `base_model` is the "
                "decoder (e.g. `Qwen3ForCausalLM.model`)."
            )
        config = model.config.get_text_config()
        if config.vocab_size < len(tokenizer):
            raise ValueError(
                f"The {role}'s LM head has {config.vocab_size} rows but the tokenizer has {len(tokenizer)} "
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
    if args.vtd_distill_backend == "naive" and is_deepspeed_zero3_enabled():
        raise ValueError(
            "`vtd_distill_backend='naive'` keeps the LM heads for its backward pass, which ZeRO-3 re-partitions. "
            "Use 'trl', 'chunked' or 'liger' (or 'auto')."
        )


def check_vocabulary(teacher: PreTrainedModel, tokenizer, args: VtDConfig, teacher_processing_class=None) -> None:
    if teacher_processing_class is None:
        teacher_path = get_config_model_id(teacher.config)
        try:
            teacher_processing_class = AutoTokenizer.from_pretrained(
                teacher_path, revision=args.teacher_model_revision, trust_remote_code=args.trust_remote_code
            )
        except (OSError, ValueError) as error:
            raise ValueError(
                f"Could not load the teacher's tokenizer from {teacher_path!r} to check that teacher and student "
                "share a vocabulary. Pass it as `teacher_processing_class=`."
            ) from error
    teacher_tokenizer = getattr(teacher_processing_class, "tokenizer", teacher_processing_class)
    student_vocab, teacher_vocab = tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student_vocab != teacher_vocab:
        differing = sorted(set(student_vocab.items()) ^ set(teacher_vocab.items()), key=lambda kv: kv[1])[:5]
        raise ValueError(
            f"The teacher's vocabulary ({len(teacher_vocab)} tokens) differs from the student's "
            f"({len(student_vocab)} tokens), e.g. {differing}. Token-level distillation compares next-token "
            "distributions id by id, so both models must use the same tokenizer. Pick a teacher from the "
            "student's model family."
        )
