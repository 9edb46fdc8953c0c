"""`VtDConfig`: defaults, validation messages that name the field, the value and the fix, JSON dict fields."""

import dataclasses

import pytest
from trl import GRPOConfig

from vtd_trl import VtDConfig


def make(**kwargs) -> VtDConfig:
    return VtDConfig(output_dir="unused", report_to=[], use_cpu=True, bf16=False, **kwargs)


def test_defaults_are_the_seed_method():
    config = make()
    assert (config.vtd_distill_alpha, config.vtd_contrast_beta, config.vtd_dpo_beta) == (5.0, 0.1, 0.1)
    assert config.num_generations == 8
    assert config.vtd_distill_beta == 0.0 and config.vtd_distill_temperature == 1.0
    assert config.vtd_distill_normalizer == "completion_tokens" and config.vtd_contrast_normalizer == "completions"
    assert config.vtd_chosen_source == "reference" and not config.vtd_distill_incorrect
    assert config.vtd_chosen_nll_weight == 0.0 and config.vtd_dpo_loss_type == "sigmoid"
    assert config.vtd_chosen_nll_source == "all"
    assert config.vllm_importance_sampling_correction is False


def test_every_field_has_help():
    grpo = {f.name for f in dataclasses.fields(GRPOConfig)}
    for field in dataclasses.fields(VtDConfig):
        if field.name not in grpo or field.name == "vllm_importance_sampling_correction":
            assert field.metadata.get("help"), field.name
            assert field.name in VtDConfig.__doc__, field.name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vtd_distill_alpha": -1.0}, r"`vtd_distill_alpha` must be >= 0, got -1.0"),
        ({"vtd_contrast_beta": float("nan")}, r"`vtd_contrast_beta` must be >= 0, got nan"),
        ({"vtd_dpo_beta": -0.1}, r"`vtd_dpo_beta` must be >= 0"),
        ({"vtd_distill_beta": 1.5}, r"`vtd_distill_beta` must be in \[0, 1\], got 1.5. Use 0.0 for forward KL"),
        ({"vtd_distill_temperature": 0.0}, r"`vtd_distill_temperature` must be > 0, got 0.0"),
        ({"temperature": 0.0}, r"`temperature` must be > 0"),
        ({"vtd_distill_backend": "triton"}, r"`vtd_distill_backend` must be one of .*'liger'.*got 'triton'"),
        ({"vtd_chosen_source": "teacher"}, r"`vtd_chosen_source` must be one of .*got 'teacher'"),
        ({"vtd_dpo_loss_type": "ipo"}, r"`vtd_dpo_loss_type` must be one of .*'length_normalized'.*got 'ipo'"),
        ({"vtd_chosen_nll_weight": -0.5}, r"`vtd_chosen_nll_weight` must be >= 0, got -0.5"),
        ({"vtd_chosen_nll_source": "reference"}, r"`vtd_chosen_nll_source` must be one of .*got 'reference'"),
        ({"vtd_chosen_distill_weight": -1.0}, r"`vtd_chosen_distill_weight` must be >= 0, got -1.0"),
        (
            {"vtd_distill_entropy_gap": 2.0, "vtd_distill_backend": "liger"},
            r"`vtd_distill_entropy_gap=2.0`.*`vtd_distill_backend='liger'`.*Set vtd_distill_backend='chunked'",
        ),
        ({"vtd_distill_entropy_gap": 2.0, "vtd_distill_top_k": 20}, r"`vtd_distill_top_k=20`.*and no top-k"),
        (
            {"vtd_chosen_distill_weight": 0.5, "vtd_contrast_beta": 0.0},
            r"`vtd_chosen_distill_weight=0.5` with `vtd_contrast_beta=0.0`.*set both > 0",
        ),
        ({"vtd_chosen_nll_source": "sibling"}, r"`vtd_chosen_nll_source='sibling'` with `vtd_chosen_nll_weight=0`"),
        (
            {"vtd_chosen_nll_weight": 1.0, "vtd_contrast_beta": 0.0},
            r"`vtd_chosen_nll_weight=1.0` with `vtd_contrast_beta=0`.*Set vtd_contrast_beta > 0",
        ),
        ({"vtd_distill_normalizer": "tokens"}, r"`vtd_distill_normalizer` must be one of"),
        ({"vtd_contrast_normalizer": "batch"}, r"`vtd_contrast_normalizer` must be one of"),
        ({"vtd_reference_format": "inline"}, r"`vtd_reference_format` must be one of .*'reasoning'.*got 'inline'"),
        ({"vtd_max_reference_length": 0}, r"`vtd_max_reference_length` must be >= 1 or None, got 0"),
        ({"beta": 0.04}, r"`beta=0.04` is a GRPO option that VtD does not use. Set it to 0.0"),
        ({"entropy_coef": 0.01}, r"`entropy_coef=0.01`.*Set it to 0.0"),
        ({"cast_lm_head_to_fp32": True}, r"`cast_lm_head_to_fp32=True`.*Set it to False"),
        ({"router_aux_loss_coef": 0.001}, r"`router_aux_loss_coef=0.001`.*Set it to None"),
        ({"teacher_model_init_kwargs": "dtype=bfloat16"}, r"`teacher_model_init_kwargs` must be a dict or a JSON"),
    ],
)
def test_bad_values_name_field_value_and_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_one_completion_per_prompt_is_allowed_unlike_grpo():
    # GRPO's K >= 2 guards group statistics of its advantages; VtD routes each completion by its own verdict.
    config = make(num_generations=1, per_device_train_batch_size=3)
    assert (config.num_generations, config.generation_batch_size) == (1, 3)
    with pytest.raises(ValueError):
        GRPOConfig(output_dir="unused", report_to=[], use_cpu=True, bf16=False, num_generations=1)
    for kwargs, message in [
        ({"num_generations": 0}, r"`num_generations` must be >= 1, got 0"),
        ({"num_generations": 1, "vtd_chosen_source": "sibling"}, r"no sibling.*Use num_generations >= 2"),
        ({"num_generations": 1, "vllm_importance_sampling_correction": True}, r"Set it to False"),
    ]:
        with pytest.raises(ValueError, match=message):
            make(per_device_train_batch_size=4, **kwargs)
    with pytest.raises(ValueError, match=r"one completion .*Set gradient_accumulation_steps=2"):
        make(num_generations=1, per_device_train_batch_size=1)


def grpo(**kwargs) -> GRPOConfig:
    return GRPOConfig(output_dir="unused", report_to=[], use_cpu=True, bf16=False, **kwargs)


def test_grpo_config_derives_no_field_from_k():
    # At K = 1 VtDConfig shows GRPOConfig's checks a stand-in group (GRPO refuses K < 2 for its advantages); that is
    # sound while GRPOConfig derives nothing from K: configs that differ in K alone agree on every other field.
    def fields(config):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "num_generations"}

    configs = [
        grpo(per_device_train_batch_size=2, gradient_accumulation_steps=3, num_generations=k) for k in (2, 3, 6)
    ]
    assert fields(configs[0]) == fields(configs[1]) == fields(configs[2])


@pytest.mark.parametrize(
    "batch",
    [
        {"per_device_train_batch_size": 3},
        {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 4},
        {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "steps_per_generation": 3},
        {"per_device_train_batch_size": 2, "generation_batch_size": 10},
    ],
)
def test_one_completion_per_prompt_gets_grpos_batch_and_later_checks(batch):
    config = make(num_generations=1, **batch)
    reference = grpo(num_generations=config.generation_batch_size, **batch)  # a K that GRPO accepts on this batch
    assert (config.num_generations, config.num_generations_eval) == (1, None)
    assert (config.generation_batch_size, config.steps_per_generation) == (
        reference.generation_batch_size,
        reference.steps_per_generation,
    )
    # GRPOConfig's checks after its K check run at K = 1 too.
    with pytest.raises(ValueError, match=r"vllm_importance_sampling_clip_min \(3.0\) must be less than"):
        make(num_generations=1, vllm_importance_sampling_clip_min=3.0, vllm_importance_sampling_clip_max=2.0, **batch)


def test_teacher_init_kwargs_parse_from_json():
    config = make(teacher_model_init_kwargs='{"dtype": "bfloat16", "attn_implementation": "sdpa"}')
    assert config.teacher_model_init_kwargs == {"dtype": "bfloat16", "attn_implementation": "sdpa"}
