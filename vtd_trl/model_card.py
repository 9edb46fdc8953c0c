"""The model card of a VtD-trained model: base model, teacher, dataset, VtD hyperparameters, method, citation."""

import os
from importlib.metadata import version
from importlib.resources import files

from huggingface_hub import ModelCard, ModelCardData

CITATION = """@software{vtd_trl,
  title  = {{vtd-trl: Verification-then-Distillation for small reasoning models, on TRL}},
  year   = {2026},
  url    = {https://pypi.org/project/vtd-trl/}
}"""


def _hub_id(name: str | None) -> str | None:
    """`name` when it reads as a hub id rather than a local directory."""
    return name if name and not os.path.isdir(name) and name.count("/") <= 1 else None


def hyperparameters(args) -> list[tuple[str, str]]:
    """The settings a reader needs to reproduce a VtD run, as (name, value) rows."""
    generation = f"vLLM ({args.vllm_mode})" if args.use_vllm else "transformers"
    teacher_signal = args.vtd_teacher_signal.replace("_", " ")
    rows = [
        ("completions per prompt (K, `num_generations`)", args.num_generations),
        ("distillation weight (`vtd_distill_alpha`)", args.vtd_distill_alpha),
        ("contrast weight (`vtd_contrast_beta`)", args.vtd_contrast_beta),
        ("DPO beta (`vtd_dpo_beta`)", args.vtd_dpo_beta),
        ("DPO loss (`vtd_dpo_loss_type`)", args.vtd_dpo_loss_type),
        ("chosen-sequence NLL weight (`vtd_chosen_nll_weight`)", args.vtd_chosen_nll_weight),
        ("pairs with the NLL (`vtd_chosen_nll_source`)", args.vtd_chosen_nll_source),
        ("chosen-sequence distillation weight (`vtd_chosen_distill_weight`)", args.vtd_chosen_distill_weight),
        ("divergence (`vtd_distill_beta`: 0 forward KL, 1 reverse KL)", args.vtd_distill_beta),
        ("token weights' entropy gap (`vtd_distill_entropy_gap`)", args.vtd_distill_entropy_gap),
        ("teacher log-probs (`vtd_distill_top_k`)", args.vtd_distill_top_k or "full vocabulary"),
        ("teacher scored", "by a vLLM server" if args.teacher_server_base_url else f"locally, per {teacher_signal}"),
        ("distillation temperature", args.vtd_distill_temperature),
        ("normalisers (distill, contrast)", f"{args.vtd_distill_normalizer}, {args.vtd_contrast_normalizer}"),
        ("incorrect completions also distilled", args.vtd_distill_incorrect),
        ("chosen side of DPO pairs", args.vtd_chosen_source),
        ("sampling temperature", args.temperature),
        ("max completion length", args.max_completion_length),
        ("generation", generation),
        ("learning rate", args.learning_rate),
        (
            "per-device batch (completions) x accumulation",
            f"{args.per_device_train_batch_size} x {args.gradient_accumulation_steps}",
        ),
        ("optimizer steps", args.max_steps if args.max_steps > 0 else f"{args.num_train_epochs} epochs"),
        ("precision", "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"),
        ("seed", args.seed),
    ]
    return [(name, f"`{value}`") for name, value in rows]


def vtd_model_card(
    model_name: str,
    base_model: str | None,
    teacher: str,
    dataset_name: str | None,
    hub_model_id: str | None,
    args,
    tags: list[str],
) -> ModelCard:
    card_data = ModelCardData(
        base_model=_hub_id(base_model),
        datasets=_hub_id(dataset_name),
        library_name="transformers",
        model_name=model_name,
        tags=["generated_from_trainer", *tags],
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(files("vtd_trl").joinpath("templates", "model_card.md")),
        model_name=model_name,
        base_model=_hub_id(base_model),
        teacher=teacher,
        teacher_link=_hub_id(teacher) is not None,
        dataset_name=dataset_name,
        dataset_link=_hub_id(dataset_name) is not None,
        hub_model_id=hub_model_id,
        hyperparameters=hyperparameters(args),
        citation=CITATION,
        vtd_trl_version=version("vtd-trl"),
        trl_version=version("trl"),
        transformers_version=version("transformers"),
        pytorch_version=version("torch"),
        datasets_version=version("datasets"),
    )
