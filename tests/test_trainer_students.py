"""`VtDTrainer.__init__` refuses the students, teachers and backends VtD cannot train with, before anything runs."""

import sys

import pytest
from conftest import arithmetic_rows, vtd_args
from datasets import Dataset
from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
from transformers import AutoModelForCausalLM, Qwen2VLConfig

from vtd_trl import VtDTrainer
from vtd_trl.demo.models import tiny_qwen3
from vtd_trl.losses import check_backend


def build(model_dirs, tmp_path, model=None, teacher=None, **kwargs):
    args = kwargs.pop("args", None) or vtd_args(tmp_path)
    return VtDTrainer(
        model=model if model is not None else model_dirs["student"],
        teacher_model=teacher if teacher is not None else model_dirs["teacher"],
        args=args,
        train_dataset=Dataset.from_list(arithmetic_rows(2)),
        **kwargs,
    )


@pytest.mark.parametrize(
    "peft_config",
    [
        PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
        PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    ],
)
def test_prompt_learning_peft_is_refused(model_dirs, tmp_path, peft_config):
    with pytest.raises(ValueError, match="prompt-learning PEFT.*LoRA"):
        build(model_dirs, tmp_path, peft_config=peft_config)
    student = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dirs["student"]), peft_config)
    with pytest.raises(ValueError, match="prompt-learning PEFT"):
        build(model_dirs, tmp_path, model=student)


def test_lora_is_accepted(model_dirs, tmp_path):
    trainer = build(model_dirs, tmp_path, peft_config=LoraConfig(r=2, target_modules=["q_proj"]))
    assert trainer.model.peft_config["default"].r == 2


def test_vision_language_student_is_refused(model_dirs, tmp_path, tokenizer):
    # The refusal reads the config alone, so a config file is all the test needs (no vision tower is built).
    path = tmp_path / "vlm"
    Qwen2VLConfig(text_config={"vocab_size": len(tokenizer), "hidden_size": 32}).save_pretrained(path)
    tokenizer.save_pretrained(path)
    with pytest.raises(ValueError, match="Qwen2VLConfig.*vision-language.*pixel inputs"):
        build(model_dirs, tmp_path, model=str(path))


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_model_whose_base_model_is_itself_is_refused(model_dirs, tmp_path, role):
    model = AutoModelForCausalLM.from_pretrained(model_dirs[role])
    model.base_model_prefix = "decoder"  # no such attribute: `base_model` falls back to the model itself
    assert model.base_model is model
    with pytest.raises(ValueError, match=rf"The {role} \(Qwen3ForCausalLM\) has no backbone.*'decoder'"):
        build(model_dirs, tmp_path, **{"model" if role == "student" else "teacher": model})


def test_soft_capped_logits_are_refused(model_dirs, tmp_path, tokenizer):
    path = tmp_path / "softcapped"
    tiny_qwen3(tokenizer, hidden_size=32, final_logit_softcapping=30.0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    with pytest.raises(ValueError, match=r"teacher soft-caps its logits \(`final_logit_softcapping=30.0`\)"):
        build(model_dirs, tmp_path, teacher=str(path))


def test_liger_backend_without_liger_fails_in_init(model_dirs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # `import liger_kernel` now raises ImportError
    monkeypatch.setitem(sys.modules, "liger_kernel.chunked_loss.jsd_loss", None)
    with pytest.raises(ImportError, match="'liger' distillation backend needs liger_kernel.chunked_loss.jsd_loss"):
        build(model_dirs, tmp_path, args=vtd_args(tmp_path, vtd_distill_backend="liger"))
    check_backend("auto", build(model_dirs, tmp_path).args.device)  # `auto` falls back to `chunked`: no error


def test_liger_backend_on_cuda_needs_its_triton_kernel(monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "liger_kernel.ops.fused_linear_jsd", None)  # as without Triton
    with pytest.raises(ImportError, match="liger_kernel.ops.fused_linear_jsd on cuda"):
        check_backend("liger", torch.device("cuda"))
    check_backend("chunked", torch.device("cuda"))
