"""Same-budget method benchmark on the offline demo: VtD's options against the trainers a TRL user already has.

Every method starts from the shipped demo student and gets the same budget: `--steps` optimizer steps of
`--completions` sequences each (sampled completions, or reference solutions for SFT), the same generation length
and temperature, the same learning-rate grid, and the same seeds. The student is then scored by greedy accuracy on
200 held-out problems (`vtd_trl.verify`). Methods, each through its own trainer:

- `vtd_*`: `VtDTrainer` with the options in the method's name (`k` = completions per prompt, so `completions / k`
  prompts per step; `cw` = contrast weight `vtd_contrast_beta`; `di` = `vtd_distill_incorrect`; `rkl` = reverse KL;
  `jsd` = the generalised JSD with beta 0.5; `sibling` = a correct completion of the same prompt as the chosen
  sequence instead of the reference; `sibref` = a correct sibling when the prompt has one, else the reference;
  `nll<w>` = the chosen sequence's per-token NLL with weight w in each pair, `vtd_chosen_nll_weight` (`sibnll<w>`:
  only where the chosen is a sibling); `ln_b<b>` = length-normalised DPO with DPO beta b; `auto` = the reference first
  when it is in the student's format, else a sibling first; `fmtnll<w>` = the NLL only on chosen sequences in the
  student's format; `a<w>` = distillation weight `vtd_distill_alpha`; `ref<n>` = chosen sequences up to n tokens,
  `vtd_max_reference_length`; `dpob<b>` = DPO beta b; `cd<w>` = the teacher's divergence on each pair's chosen
  sequence with weight w, `vtd_chosen_distill_weight`; `eg<a>` = distilled tokens weighted by 2 sigmoid(a (H_student -
  H_teacher)), `vtd_distill_entropy_gap`; `tg` = the teacher's verified greedy generation as the chosen sequence where
  no correct sibling is, `vtd_chosen_teacher_generation`);
  `vtd_seed` is the method as published (K=8, alpha 5, contrast weight 0.1), `vtd_seed_literal` the same with each
  term divided by its own count (distilled tokens, DPO pairs);
- `kd_forward`, `kd_reverse`: TRL's `DistillationTrainer` (on-policy distillation, one completion per prompt, so
  `completions` prompts per step), `beta` 0 and 1 (1 is TRL's default);
- `grpo`: TRL's `GRPOTrainer` with the correctness reward, K=8;
- `sft`: TRL's `SFTTrainer` on the reference solutions (prompt-completion rows, loss on the completion only).
  TRL's `DistillationTrainer` has no flag that adds an SFT term, so there is no "distillation + SFT" peer;
- `sdpo`: TRL's `SDPOTrainer` (experimental), self-distillation with no external teacher: the student, reprompted
  with a sibling completion the correctness reward verified, is the teacher of its own sampled tokens (an EMA copy,
  reverse KL on the sampled tokens, its published defaults), K=8 as GRPO;
- `iw_opd`: TRL's `IWOPDTrainer` (experimental), on-policy distillation with each sampled token's signal weighted by
  the teacher-student discrepancy over its prefix (its defaults: gamma 0.5, reverse KL on the sampled tokens), one
  completion per prompt as KD; top-p 1 as every other method samples;
- `gkd`: TRL's `GKDTrainer` (experimental), each step on-policy with probability `lmbda` 0.5 (the student's own
  completions) and otherwise on the references (off-policy), generalised JSD with `beta` 0.5 (its defaults), one
  sequence per prompt.

Regimes are the columns: the teacher (`strong`: the shipped 99.5% teacher; `imperfect`: the shipped 61.5% one) times
the references (`think`: written in the student's own thinking-mode format; `terse`: one line of steps and "The
answer is N.", as human-written datasets have them). A method that reads no teacher (GRPO, SFT) or no reference
(KD, GRPO) runs once per regime it depends on, and that run fills the other columns. Opt-in columns
(`--regimes imperfect/written imperfect/verified`): the terse references rewritten by the regime's teacher, its greedy
solution where that verifies, as datasets of reasoning traces are made; `written` keeps the terse reference where the
teacher fails, `verified` keeps only the rows it solves (rejection sampling, drawing more prompts). Writing them costs
one teacher generation per prompt drawn, which no other column spends.

`--task groups` runs the same benchmark on the held-out task (`vtd_trl.demo.task`: a product, then additions and
subtractions) with its own shipped student and teachers: the options tuned on the demo's task, `additions`, checked
where they were not tuned.

    python scripts/bench/methods.py                                  # the default methods, 3 seeds, all regimes
    python scripts/bench/methods.py --methods kd_forward vtd_seed --regimes strong/think --seeds 0 --jobs 2
    python scripts/bench/methods.py --methods kd_forward sft --steps 100 --output methods_100_steps.json
    python scripts/bench/methods.py --task groups --methods kd_forward vtd_k2_di_cw3_sibref_sibnll1 --output groups.json
    python scripts/bench/methods.py --methods sdpo iw_opd gkd --seeds 0 --learning-rates 1e-4 3e-4 --jobs 1 \
        --output scripts/bench/results/methods_peers.json

Prints a Markdown table (best learning rate of the grid per method and regime, mean ± std over seeds) and writes
`--output` (JSON, every run) and the same table as Markdown (`--markdown`, by default next to `--output`). Each run in
the JSON carries its learning curve, `curve`: `[step, accuracy]` at step 0 and every `--curve-every` steps on the same
200 held-out problems (about 1.5 s a point on one CPU thread, left out of `train_seconds`), the last point being the
final score; and `train_metrics`: what its trainer logged every 10 steps (`vtd/accuracy`, `vtd/distill_fraction`,
`vtd/contrast_fraction` ... for VtD). Greedy evaluation draws no random numbers, so a run trains exactly as without
its curve.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

TEACHERS = {"strong": "teacher", "imperfect": "teacher_imperfect"}
REFERENCE_STYLES = ("think", "terse")
REGIMES = [f"{teacher}/{style}" for teacher in TEACHERS for style in REFERENCE_STYLES]
# Opt-in: the terse references rewritten by the regime's teacher, its greedy solution where that verifies (`written`:
# the other rows keep their terse reference; `verified`: only the rows with a verified solution are kept)
WRITTEN_STYLES = ("written", "verified")
WRITTEN_REGIMES = [f"{teacher}/{style}" for teacher in TEACHERS for style in WRITTEN_STYLES]


@dataclass(frozen=True)
class Method:
    """One training method: which trainer, with which options."""

    trainer: str  # "vtd", "kd", "grpo", "sft", "sdpo", "iw_opd" or "gkd"
    options: dict = field(default_factory=dict)
    num_generations: int = 1

    @property
    def uses_teacher(self) -> bool:
        return self.trainer in ("vtd", "kd", "iw_opd", "gkd")

    @property
    def uses_reference(self) -> bool:
        if self.trainer == "vtd":
            return self.options.get("vtd_contrast_beta", 0.1) > 0 and self.options["vtd_chosen_source"] != "sibling"
        return self.trainer in ("sft", "gkd")


def vtd(k: int, cw: float, di: bool = False, rkl: bool = False, chosen: str = "reference", **extra) -> Method:
    options = {"vtd_contrast_beta": cw, "vtd_distill_incorrect": di, "vtd_distill_beta": 1.0 if rkl else 0.0}
    return Method("vtd", {**options, "vtd_chosen_source": chosen, **extra}, num_generations=k)


# The tuned set's contrast options: a correct sibling as the chosen sequence first, with its NLL
TUNED_CONTRAST = dict(chosen="sibling_then_reference", vtd_chosen_nll_weight=1.0, vtd_chosen_nll_source="sibling")

METHODS = {
    "kd_forward": Method("kd", {"beta": 0.0}),
    "kd_reverse": Method("kd", {"beta": 1.0}),
    "grpo": Method("grpo", num_generations=8),
    "sft": Method("sft"),
    "sdpo": Method("sdpo", num_generations=8),
    "iw_opd": Method("iw_opd"),
    "gkd": Method("gkd", {"lmbda": 0.5, "beta": 0.5}),
    "vtd_seed": vtd(8, 0.1),
    "vtd_k8_cw1": vtd(8, 1.0),
    "vtd_k8_di_cw3": vtd(8, 3.0, di=True),
    "vtd_k4_di_cw3": vtd(4, 3.0, di=True),
    "vtd_k2_di_cw3": vtd(2, 3.0, di=True),
    "vtd_k1_di_cw3": vtd(1, 3.0, di=True),
    "vtd_k2_cw3": vtd(2, 3.0),
    "vtd_k2_di_cw0.1": vtd(2, 0.1, di=True),
    "vtd_k2_di_cw1": vtd(2, 1.0, di=True),
    "vtd_k2_di_cw10": vtd(2, 10.0, di=True),
    "vtd_k2_di_cw3_rkl": vtd(2, 3.0, di=True, rkl=True),
    "vtd_k2_di_cw3_sibling": vtd(2, 3.0, di=True, chosen="sibling"),
    # The contrast term's levers for references in another format than the student's (terse): an NLL of the chosen
    # sequence (RPO), a chosen sequence in the student's own format when a sibling is right, length-normalised DPO
    # (its per-token log-ratios with a DPO beta about a sequence length larger)
    "vtd_k2_di_cw3_nll1": vtd(2, 3.0, di=True, vtd_chosen_nll_weight=1.0),
    "vtd_k2_di_cw3_nll0.3": vtd(2, 3.0, di=True, vtd_chosen_nll_weight=0.3),
    "vtd_k2_di_cw3_sibref": vtd(2, 3.0, di=True, chosen="sibling_then_reference"),
    "vtd_k2_di_cw3_sibref_nll1": vtd(2, 3.0, di=True, chosen="sibling_then_reference", vtd_chosen_nll_weight=1.0),
    "vtd_k2_di_cw3_ln_b5": vtd(2, 3.0, di=True, vtd_dpo_loss_type="length_normalized", vtd_dpo_beta=5.0),
    "vtd_k2_di_cw3_sibref_sibnll1": vtd(2, 3.0, di=True, **TUNED_CONTRAST),
    # The chosen source by the reference's format: the reference first when it is in the student's format (think
    # references), a sibling first when it is not (terse ones); the NLL only on chosen sequences in that format
    "vtd_k2_di_cw3_auto": vtd(2, 3.0, di=True, chosen="auto"),
    "vtd_k2_di_cw3_auto_ln_b5": vtd(
        2, 3.0, di=True, chosen="auto", vtd_dpo_loss_type="length_normalized", vtd_dpo_beta=5.0
    ),
    "vtd_k2_di_cw3_sibref_sibnll3": vtd(
        2, 3.0, di=True, chosen="sibling_then_reference", vtd_chosen_nll_weight=3.0, vtd_chosen_nll_source="sibling"
    ),
    "vtd_k2_di_cw3_sibref_sibnll1_ln_b5": vtd(
        2,
        3.0,
        di=True,
        chosen="sibling_then_reference",
        vtd_chosen_nll_weight=1.0,
        vtd_chosen_nll_source="sibling",
        vtd_dpo_loss_type="length_normalized",
        vtd_dpo_beta=5.0,
    ),
    "vtd_k2_di_cw3_auto_fmtnll1": vtd(
        2, 3.0, di=True, chosen="auto", vtd_chosen_nll_weight=1.0, vtd_chosen_nll_source="in_format"
    ),
    # Moved alone from the tuned set, for the imperfect teacher with terse references: chosen references not cut
    # (a terse reference in the think format is longer than 64 tokens), more samples per prompt (more correct
    # siblings), less weight on the teacher
    "vtd_k2_di_cw3_sibref_sibnll1_ref96": vtd(2, 3.0, di=True, **TUNED_CONTRAST, vtd_max_reference_length=96),
    "vtd_k4_di_cw3_sibref_sibnll1": vtd(4, 3.0, di=True, **TUNED_CONTRAST),
    "vtd_k2_di_cw3_sibref_sibnll1_a2": vtd(2, 3.0, di=True, **TUNED_CONTRAST, vtd_distill_alpha=2.0),
    "vtd_k2_cw3_sibref_sibnll1": vtd(2, 3.0, **TUNED_CONTRAST),
    "vtd_k2_di_cw3_sibling_sibnll1": vtd(2, 3.0, di=True, **{**TUNED_CONTRAST, "chosen": "sibling"}),
    # The two terms' weights and the DPO temperature, moved alone from the first tuned set
    "vtd_k2_di_cw3_a2": vtd(2, 3.0, di=True, vtd_distill_alpha=2.0),
    "vtd_k2_di_cw3_a10": vtd(2, 3.0, di=True, vtd_distill_alpha=10.0),
    "vtd_k2_di_cw3_dpob0.5": vtd(2, 3.0, di=True, vtd_dpo_beta=0.5),
    # Levers for a strong teacher: the teacher's divergence on each pair's chosen sequence (teacher-forced), on the
    # tuned set (chosen: a correct sibling, else the reference) and with the reference as every pair's chosen sequence
    "vtd_k2_di_cw3_sibref_sibnll1_cd1": vtd(2, 3.0, di=True, **TUNED_CONTRAST, vtd_chosen_distill_weight=1.0),
    "vtd_k2_di_cw3_cd1": vtd(2, 3.0, di=True, vtd_chosen_distill_weight=1.0),
    # and the distilled tokens weighted by the student-teacher entropy gap, 2 sigmoid(2 (H_student - H_teacher))
    "vtd_k2_di_cw3_sibref_sibnll1_eg2": vtd(2, 3.0, di=True, **TUNED_CONTRAST, vtd_distill_entropy_gap=2.0),
    # and the generalised JSD (beta 0.5, GKD's default) instead of the forward KL
    "vtd_k2_di_cw3_sibref_sibnll1_jsd": vtd(2, 3.0, di=True, **TUNED_CONTRAST, vtd_distill_beta=0.5),
    # and the teacher's verified greedy generation as the chosen sequence instead of the reference (after a sibling),
    # with the NLL of both kinds of chosen sequences (in the student's format)
    "vtd_k2_di_cw3_sibling_tg_fmtnll1": vtd(
        2,
        3.0,
        di=True,
        chosen="sibling",
        vtd_chosen_teacher_generation=True,
        vtd_chosen_nll_weight=1.0,
        vtd_chosen_nll_source="in_format",
    ),
    # Ablations of the published setup: each half of VtD alone, and the literal per-term normalisers
    "vtd_k8_cw0": vtd(8, 0.0),
    "vtd_k8_di_cw0": vtd(8, 0.0, di=True),
    "vtd_seed_literal": Method(
        "vtd",
        {**vtd(8, 0.1).options, "vtd_distill_normalizer": "distilled_tokens", "vtd_contrast_normalizer": "pairs"},
        num_generations=8,
    ),
}
DEFAULT_METHODS = ["kd_forward", "kd_reverse", "grpo", "sft", "vtd_seed", "vtd_k2_di_cw3"]


@dataclass(frozen=True)
class Budget:
    steps: int = 50
    completions: int = 64  # sequences per optimizer step, for every method
    max_completion_length: int = 64
    temperature: float = 1.0
    eval_rows: int = 200
    task: str = "additions"  # the demo task, with its own student and teachers (`groups`: the held-out task)


def regime_runs(method: Method, regimes: list[str]) -> dict[str, str]:
    """For each regime, the regime whose run fills it: a method that ignores an axis runs at its first value."""
    runs = {}
    for regime in regimes:
        teacher, style = regime.split("/")
        writes = style in WRITTEN_STYLES and method.uses_reference  # the teacher wrote the references
        teacher = teacher if method.uses_teacher or writes else next(iter(TEACHERS))
        style = style if method.uses_reference else REFERENCE_STYLES[0]
        runs[regime] = f"{teacher}/{style}"
    return runs


def build_trainer(name: str, regime: str, seed: int, learning_rate: float, budget: Budget, output_dir: str):
    """The trainer of one run, ready to `train()`: every method through its own TRL (or VtD) trainer."""
    from transformers import AutoTokenizer
    from trl import DistillationConfig, DistillationTrainer, GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from vtd_trl import VtDConfig, VtDTrainer
    from vtd_trl.demo.models import demo_model_path
    from vtd_trl.demo.task import demo_dataset
    from vtd_trl.rewards import correctness_reward

    method = METHODS[name]
    teacher_role, style = regime.split("/")
    student = demo_model_path("student", budget.task)
    teacher = demo_model_path(TEACHERS[teacher_role], budget.task)
    tokenizer = AutoTokenizer.from_pretrained(student)
    num_prompts = budget.steps * budget.completions // method.num_generations
    if style in WRITTEN_STYLES:
        dataset = written_references(
            num_prompts, seed, teacher, tokenizer, verified_only=style == "verified", task=budget.task
        )
    else:
        dataset = demo_dataset("train", num_prompts, seed=seed, reference_style=style, task=budget.task)
    common = dict(
        output_dir=output_dir, max_steps=budget.steps, learning_rate=learning_rate, lr_scheduler_type="constant",
        per_device_train_batch_size=budget.completions, seed=seed, use_cpu=True, bf16=False, report_to="none",
        save_strategy="no", logging_steps=10, disable_tqdm=True,
    )  # fmt: skip
    sampling = dict(max_completion_length=budget.max_completion_length, temperature=budget.temperature)
    if method.trainer == "sft":
        rows = dataset.map(
            lambda row: {"completion": [{"role": "assistant", "content": row["reference"]}]},
            remove_columns=["answer", "reference"],
        )
        args = SFTConfig(**common, activation_checkpointing=False, max_length=None, dataloader_drop_last=True)
        return SFTTrainer(model=student, args=args, train_dataset=rows, processing_class=tokenizer)
    if method.trainer == "kd":
        args = DistillationConfig(**common, **sampling, gradient_checkpointing=False, **method.options)
        return DistillationTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=dataset, processing_class=tokenizer
        )
    if method.trainer == "grpo":
        args = GRPOConfig(**common, **sampling, num_generations=method.num_generations)
        return GRPOTrainer(
            model=student, reward_funcs=correctness_reward, args=args, train_dataset=dataset,
            processing_class=tokenizer,
        )  # fmt: skip
    if method.trainer in ("sdpo", "iw_opd", "gkd"):
        return experimental_trainer(method, student, teacher, dataset, tokenizer, common, sampling)
    args = VtDConfig(**common, **sampling, num_generations=method.num_generations, **method.options)
    return VtDTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=dataset,
        processing_class=tokenizer,
    )  # fmt: skip


def experimental_trainer(method: Method, student: str, teacher: str, dataset, tokenizer, common: dict, sampling: dict):
    """TRL's experimental peers (`trl.experimental`), each with the rows its collator reads."""
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    from trl.experimental.iw_opd import IWOPDConfig, IWOPDTrainer
    from trl.experimental.sdpo import SDPOConfig, SDPOTrainer

    from vtd_trl.rewards import correctness_reward

    if method.trainer == "sdpo":  # no teacher: the reward picks the sibling the student is reprompted with
        args = SDPOConfig(**common, **sampling, num_generations=method.num_generations, **method.options)
        return SDPOTrainer(
            model=student, reward_funcs=correctness_reward, args=args, train_dataset=dataset,
            processing_class=tokenizer,
        )  # fmt: skip
    if method.trainer == "iw_opd":  # prompt-only conversations: every completion is the student's own
        rows = dataset.map(lambda row: {"messages": row["prompt"]}, remove_columns=dataset.column_names)
        args = IWOPDConfig(**common, **sampling, top_p=1.0, gradient_checkpointing=False, **method.options)
        trainer = IWOPDTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=rows, processing_class=tokenizer
        )
        # The Trainer counts the loss's tokens in the prompt-only rows, before the student samples: 0, and the loss
        # is divided by it (-inf, NaN weights after one step). Not counting makes it the mean over the sampled tokens.
        trainer.model_accepts_loss_kwargs = False
        return trainer
    # GKD: the reference as the assistant turn, the off-policy sequence when a step is not on-policy
    rows = dataset.map(
        lambda row: {"messages": row["prompt"] + [{"role": "assistant", "content": row["reference"]}]},
        remove_columns=dataset.column_names,
    )
    args = GKDConfig(
        **common, temperature=sampling["temperature"], max_new_tokens=sampling["max_completion_length"],
        gradient_checkpointing=False, dataloader_drop_last=True, **method.options,
    )  # fmt: skip
    return GKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=rows, processing_class=tokenizer)


def written_references(
    num_prompts: int, seed: int, teacher: str, tokenizer, verified_only: bool, task: str = "additions"
):
    """Training rows whose terse reference is replaced by the teacher's greedy solution where that verifies (as a
    dataset of reasoning traces is made). With `verified_only` (rejection sampling) only those rows are kept, drawing
    more prompts until there are `num_prompts`; otherwise a row the teacher fails keeps its terse reference."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from vtd_trl.demo.evaluate import evaluate
    from vtd_trl.demo.task import demo_dataset

    model = AutoModelForCausalLM.from_pretrained(teacher)
    written, drawn, draw = [], 0, num_prompts
    while len(written) < num_prompts:
        # A larger draw starts with the smaller one (`generate_problems`), so only the new rows are graded
        rows = demo_dataset("train", draw, seed=seed, reference_style="terse", task=task).select(range(drawn, draw))
        result = evaluate(model, tokenizer, rows)
        written += [
            {**row, "reference": completion} if verdict else row
            for row, completion, verdict in zip(rows, result.completions, result.verdicts)
            if verdict or not verified_only
        ]
        drawn, draw = draw, int(draw * 1.25 * num_prompts / max(len(written), 1)) + 1
    return Dataset.from_list(written[:num_prompts])


def held_out_accuracy(model, tokenizer, rows: int, task: str = "additions") -> float:
    from vtd_trl.demo.evaluate import evaluate
    from vtd_trl.demo.task import demo_dataset

    return evaluate(model, tokenizer, demo_dataset("test", rows, task=task)).accuracy


def curve_callback(every: int, rows: int, task: str):
    """A callback that records held-out greedy accuracy on `rows` problems at step 0 and every `every` steps but the
    last (that point is the final score) in `points`, and the seconds those evaluations took in `seconds`."""
    from transformers import TrainerCallback

    class HeldOutCurve(TrainerCallback):
        def __init__(self):
            self.points, self.seconds = [], 0.0

        def record(self, state, model, processing_class):
            start = time.perf_counter()
            self.points.append([state.global_step, held_out_accuracy(model, processing_class, rows, task)])
            self.seconds += time.perf_counter() - start

        def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
            self.record(state, model, processing_class)

        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            if state.global_step % every == 0 and state.global_step < state.max_steps:
                self.record(state, model, processing_class)

    return HeldOutCurve()


def train(name: str, regime: str, seed: int, learning_rate: float, budget: Budget, output_dir: str, curve=None):
    """Trains one method in one regime; returns the trainer and its training time in seconds (the curve's
    evaluations left out)."""
    from transformers import PrinterCallback

    trainer = build_trainer(name, regime, seed, learning_rate, budget, output_dir)
    trainer.remove_callback(PrinterCallback)  # one JSON line per run is printed instead
    if curve is not None:
        trainer.add_callback(curve)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return trainer, seconds - getattr(curve, "seconds", 0.0)


def train_metrics(log_history: list[dict]) -> list[dict]:
    """What the trainer logged every `logging_steps`: its numbers, rounded, with their step."""
    return [
        {key: round(value, 4) for key, value in entry.items() if isinstance(value, (int, float)) and key != "epoch"}
        for entry in log_history
        if "train_runtime" not in entry
    ]


def run(
    name: str,
    regime: str,
    seed: int,
    learning_rate: float,
    budget: Budget,
    curve_every: int = 10,
) -> dict:
    """Trains one method in one regime and scores the student on the held-out problems; with `curve_every`, records
    its learning curve on the same problems."""
    import torch

    torch.set_num_threads(1)
    curve = curve_callback(curve_every, budget.eval_rows, budget.task) if curve_every else None
    with tempfile.TemporaryDirectory() as output_dir:
        trainer, seconds = train(name, regime, seed, learning_rate, budget, output_dir, curve)
        model = trainer.accelerator.unwrap_model(trainer.model)
        accuracy = held_out_accuracy(model, trainer.processing_class, budget.eval_rows, budget.task)
    result = {
        "method": name,
        "regime": regime,
        "seed": seed,
        "learning_rate": learning_rate,
        "accuracy": accuracy,
        "train_seconds": round(seconds, 1),
        "steps": trainer.state.global_step,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if curve is not None:
        result["curve"] = curve.points + [[trainer.state.global_step, accuracy]]
    return {**result, "train_metrics": train_metrics(trainer.state.log_history)}


def summarize(results: list[dict], methods: list[str], regimes: list[str]) -> list[dict]:
    """One row per method: per regime, the learning rate of the grid with the best mean over seeds, its mean, std,
    per-seed scores and the other learning rates' means."""
    rows = []
    for name in methods:
        row = {"method": name, "cells": {}}
        for regime, source in regime_runs(METHODS[name], regimes).items():
            runs = [r for r in results if r["method"] == name and r["regime"] == source]
            by_lr = {}
            for r in runs:
                by_lr.setdefault(r["learning_rate"], []).append(r)
            if not by_lr:
                continue
            # Only learning rates run on every seed compete, so that each mean is over the same seeds.
            seeds = max(len(runs) for runs in by_lr.values())
            complete = {lr: runs for lr, runs in by_lr.items() if len(runs) == seeds}
            lr, best = max(complete.items(), key=lambda item: statistics.mean(r["accuracy"] for r in item[1]))
            scores = [r["accuracy"] for r in sorted(best, key=lambda r: r["seed"])]
            row["cells"][regime] = {
                "source": source,
                "learning_rate": lr,
                "mean": statistics.mean(scores),
                "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "seeds": scores,
                "train_seconds": statistics.mean(r["train_seconds"] for r in best),
                "by_learning_rate": {
                    k: statistics.mean(r["accuracy"] for r in v) for k, v in sorted(complete.items())
                },
            }
        rows.append(row)
    return rows


def markdown(rows: list[dict], regimes: list[str], header: str) -> str:
    lines = [
        header,
        "",
        "| method | " + " | ".join(regimes) + " | train s / run |",
        "|---|" + "---:|" * len(regimes) + "---:|",
    ]
    for row in rows:
        cells = []
        for regime in regimes:
            cell = row["cells"].get(regime)
            if cell is None:
                cells.append("—")
                continue
            shared = "" if cell["source"] == regime else f" (= {cell['source']})"
            cells.append(f"{cell['mean']:.1%} ± {cell['std']:.1%} @{cell['learning_rate']:g}{shared}")
        seconds = [c["train_seconds"] for c in row["cells"].values()]
        if seconds:  # a method with no runs has no row
            lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {statistics.mean(seconds):.0f} |")
    return "\n".join(lines)


def main():
    from vtd_trl.demo.task import TASKS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS) + ["all"])
    parser.add_argument("--regimes", nargs="+", default=REGIMES, choices=REGIMES + WRITTEN_REGIMES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--learning-rates", nargs="+", type=float, default=[3e-4])
    parser.add_argument("--steps", type=int, default=Budget.steps)
    parser.add_argument("--completions", type=int, default=Budget.completions, help="Sequences per step.")
    parser.add_argument("--temperature", type=float, default=Budget.temperature, help="Sampling temperature.")
    parser.add_argument("--task", default=Budget.task, choices=TASKS, help="The demo task and its shipped models.")
    parser.add_argument("--curve-every", type=int, default=10, help="Steps between learning-curve points; 0: none.")
    parser.add_argument("--jobs", type=int, default=2, help="Runs in parallel, one torch thread each.")
    parser.add_argument("--output", default="methods.json", help="JSON of every run.")
    parser.add_argument("--resume", action="store_true", help="Keep the runs already in --output, run the rest.")
    parser.add_argument("--table-only", action="store_true", help="Print the table of the runs in --output, run none.")
    parser.add_argument("--markdown", help="Where the table goes (default: --output with .md).")
    args = parser.parse_args()
    methods = list(METHODS) if "all" in args.methods else args.methods
    budget = Budget(steps=args.steps, completions=args.completions, temperature=args.temperature, task=args.task)
    for name in methods:
        if budget.completions % METHODS[name].num_generations:
            parser.error(f"--completions {budget.completions} is not a multiple of K of {name}")

    results = []
    if (args.resume or args.table_only) and os.path.exists(args.output):
        with open(args.output) as f:
            saved = json.load(f)
        if {"task": Budget.task, **saved["budget"]} != budget.__dict__:  # files from before `--task` are additions
            parser.error(
                f"{args.output} holds runs at another budget ({saved['budget']}, this command: {budget.__dict__}); "
                "give the same --steps, --completions, --temperature and --task, or another --output."
            )
        results = saved["results"]
    done = {(r["method"], r["regime"], r["seed"], r["learning_rate"]) for r in results}
    todo = sorted(
        {
            (name, source, seed, lr)
            for name in methods
            for source in regime_runs(METHODS[name], args.regimes).values()
            for seed in args.seeds
            for lr in args.learning_rates
        }
        - done
    )
    if args.table_only:
        todo = []
    start = time.perf_counter()

    def save():
        with open(args.output, "w") as f:
            json.dump({"budget": budget.__dict__, "results": results}, f, indent=1)

    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run, *key, budget, args.curve_every) for key in todo]
        for future in futures:
            results.append(future.result())
            save()
            print(json.dumps({k: v for k, v in results[-1].items() if k != "train_metrics"}), flush=True)
    wall = time.perf_counter() - start

    header = (
        f"{budget.steps} steps x {budget.completions} sequences, max {budget.max_completion_length} new tokens, "
        f"T={budget.temperature}; learning rates {args.learning_rates} (best mean shown, @lr); seeds {args.seeds}; "
        f"greedy accuracy on {budget.eval_rows} held-out problems of the {budget.task} task; "
        + (
            f"the runs in {args.output}"
            if args.table_only
            else f"{len(todo)} runs in {wall / 60:.1f} min, {args.jobs} at a time"
        )
    )
    # The table is of this command's seeds and learning rates, whatever else `--output` holds
    shown = [r for r in results if r["seed"] in args.seeds and r["learning_rate"] in args.learning_rates]
    table = markdown(summarize(shown, methods, args.regimes), args.regimes, header)
    print("\n" + table)
    with open(args.markdown or os.path.splitext(args.output)[0] + ".md", "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
