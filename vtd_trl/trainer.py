"""`VtDTrainer`: GRPO's generation, then each completion verified, routed, and taught by distillation or contrast.

One generation batch, step by step (the math: docs/method.md):
1. generate          GRPOTrainer._generate_and_score_completions (transformers or vLLM), wrapped by ours below
2. verify            rewards.correctness_reward -> verify.verify, read in `_calculate_rewards` (1, 0 or None)
3. route             `VtDTrainer.route`: (distill_mask, contrast_mask) of each completion
4. teacher signal    teachers.generation_signal: a LocalTeacher or ServerTeacher scores the distilled completions
5. chosen sequences  chosen.ChosenSequences.find: the reference or a correct sibling, in the student's format
6. reference pass    `_reference_logps`: the frozen initial student's log-probs of each pair's two sequences
7. losses            `_vtd_loss`, per micro-batch: losses.signal_distillation_loss and losses.contrast_loss, scaled
                     so that processes and accumulation add up to alpha * L_distill + beta * L_contrast
Around them: setup.py (checks, the frozen teacher and reference), packing.py (sequences packed for a forward pass,
hidden states, log-probs, collectives), config.py (every option).
"""

import inspect
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id, maybe_gather_lm_head_ctx, use_adapter

from . import setup
from .chosen import ChosenSequences
from .config import VtDConfig, check_teacher_source
from .demo.models import resolve_model
from .losses import check_backend, contrast_loss, signal_distillation_loss
from .model_card import CITATION, vtd_model_card
from .packing import (
    Batch,
    first_occurrence,
    forward_through,
    full_tensor,
    hidden_states,
    micro_batches,
    pad_parts,
    sequence_logps,
    sequence_logps_from_hidden,
    trainable_head_weight,
)
from .teachers import LocalTeacher, ServerTeacher, generation_signal, stored_signal


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
    >>> from vtd_trl import VtDConfig, VtDTrainer
    >>> from vtd_trl.demo.task import demo_dataset

    >>> trainer = VtDTrainer(
    ...     model="vtd-demo/student",  # or "Qwen/Qwen3-1.7B"
    ...     teacher_model="vtd-demo/teacher",  # or "Qwen/Qwen3-8B"
    ...     args=VtDConfig(output_dir="vtd-demo-student", num_generations=2, learning_rate=3e-4, use_cpu=True),
    ...     train_dataset=demo_dataset("train", 64),
    ... )
    >>> trainer.train()
    ```

    Args:
        model: the student: a model id, a path, a `PreTrainedModel` or a `PeftModel`, as for `GRPOTrainer`.
            `vtd-demo/student` is the offline demo's student.
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
        model = resolve_model(model)
        teacher_model = resolve_model(teacher_model if teacher_model is not None else args.teacher_model_name_or_path)
        server_url = args.teacher_server_base_url
        check_teacher_source(server_url, teacher_model, "`teacher_model=`", required=True)
        server = ServerTeacher.from_config(args) if server_url is not None else None  # reachable before any load
        if teacher_model is not None and not isinstance(teacher_model, str) and args.teacher_model_init_kwargs:
            raise ValueError(
                "`teacher_model_init_kwargs` is set but the teacher is already instantiated; drop the kwargs or pass "
                "the teacher as an id or path."
            )
        peft_config = kwargs.get("peft_config")
        setup.check_columns(train_dataset, args)
        setup.check_student(model, args, peft_config, kwargs.get("processing_class"))
        check_backend(args.vtd_distill_backend, args.device)
        reward_funcs, self._correctness_index = setup.with_correctness_reward(reward_funcs, args)
        reference = setup.reference_model(model, args, peft_config)  # before GRPO wraps the student

        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset, **kwargs)
        if self.aux_loss_enabled:
            warnings.warn(
                f"The student is a Mixture-of-Experts model with `router_aux_loss_coef={self.router_aux_loss_coef}` in "
                "its config; VtD's loss does not add the router load-balancing loss.",
                stacklevel=2,
            )
        teacher = None if server else setup.load_teacher(teacher_model, args, self.model.dtype)
        setup.check_models(self.model, teacher, self._tokenizer, args, teacher_processing_class)
        self.teacher_model = None if server else setup.prepare_frozen(teacher, self.accelerator)
        if server is not None:
            server.check(self._tokenizer, self.max_completion_length)
            self.teacher = server
        else:
            vocab = min(m.config.get_text_config().vocab_size for m in (self.model, teacher))
            top_k, temperature = args.vtd_distill_top_k, args.vtd_distill_temperature
            self.teacher = LocalTeacher(self.teacher_model, self.accelerator, top_k, temperature, vocab)
        self.reference_model = None if reference is None else setup.prepare_frozen(reference, self.accelerator)
        template = dict(
            tools=self.tools or None, chat_template=self.chat_template, chat_template_kwargs=self.chat_template_kwargs
        )
        max_chosen = args.vtd_max_reference_length or self.max_completion_length
        self.chosen = ChosenSequences(self._tokenizer, self.eos_token_ids, args, max_chosen, template, self.teacher)
        self._teacher_pool = ThreadPoolExecutor(max_workers=1) if server is not None else None

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """Write `README.md` in `output_dir`: base model, teacher, dataset, VtD hyperparameters, method, citation."""
        if self.is_world_process_zero():
            tags = sorted({*([tags] if isinstance(tags, str) else tags or []), *self._tag_names})
            name, base = model_name or Path(self.args.output_dir).name, get_config_model_id(self.model.config)
            hub_id = getattr(self, "hub_model_id", None)
            card = vtd_model_card(name, base, self.teacher.name, dataset_name, hub_id, self.args, tags)
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
        batch_size = len(inputs)
        offset = self.accelerator.process_index * batch_size
        rewards = self._correctness[offset : offset + batch_size]  # this process's rows
        output["vtd_truncated"] = torch.tensor(self._truncated, dtype=torch.bool, device=device)
        distill, contrast = self._route_checked(rewards.clone(), inputs, output)
        loss_mask = output["completion_mask"] * output.get("tool_mask", 1)
        # A completion with no token left to train on (e.g. masked by `mask_truncated_completions`) feeds no loss.
        trainable = loss_mask.sum(1) > 0
        distill, contrast = distill & trainable, contrast & trainable
        pairs, has_chosen, chosen_cut = self._add_chosen_sequences(inputs, output, contrast)
        output["vtd_distill"] = distill
        output["vtd_contrast"] = pairs
        scored = distill if self.args.vtd_distill_alpha > 0 else torch.zeros_like(distill)
        if self._teacher_pool is not None:  # a server scores while the reference policy runs here
            pending = self._teacher_pool.submit(self._generation_teacher_signal, output, scored)
            output["vtd_ref_rejected_logps"], output["vtd_ref_chosen_logps"] = self._reference_logps(output, pairs)
            output.update(pending.result())
        else:
            if self._teacher_at_generation:
                output.update(self._generation_teacher_signal(output, scored))
            output["vtd_ref_rejected_logps"], output["vtd_ref_chosen_logps"] = self._reference_logps(output, pairs)
        counts = [
            (loss_mask * distill.unsqueeze(1)).sum(),  # the distilled tokens (a normaliser), then the metrics' counts
            pairs.sum(),
            distill.sum(),
            (contrast & ~has_chosen).sum(),
            (~(distill | pairs)).sum(),
            output["vtd_truncated"].sum(),
            chosen_cut.sum(),
            (pairs | chosen_cut).sum(),
        ]
        self._count_generation_batch(output, batch_size, counts)
        return output

    def _add_chosen_sequences(self, inputs, output, contrast):
        """Store each pair's chosen sequence beside its completion; returns the pairs (contrasted rows that have a
        chosen sequence), the rows that found one, and the contrasted rows whose chosen sequence was cut."""
        device, batch_size = contrast.device, len(inputs)
        all_rewards = self._correctness
        if self.args.vtd_contrast_beta > 0:
            training = self.model.training
            group_size = self.num_generations if training else self.num_generations_eval
            offset = self.accelerator.process_index * batch_size
            chosen_ids, keys, cut, in_format = self.chosen.find(
                inputs, output, all_rewards, contrast, group_size, offset
            )
        else:
            chosen_ids, keys = [None] * batch_size, [-1] * batch_size
            cut = in_format = [False] * batch_size
        has_chosen = torch.tensor([ids is not None for ids in chosen_ids], dtype=torch.bool, device=device)
        pairs = contrast & has_chosen
        chosen_ids = [ids if pair else None for ids, pair in zip(chosen_ids, pairs.tolist())]
        output["vtd_chosen_ids"], output["vtd_chosen_mask"] = pad_parts(
            chosen_ids, self._tokenizer.pad_token_id, device
        )
        output["vtd_chosen_key"] = torch.tensor(keys, device=device) * pairs - (~pairs).long()
        key, n = output["vtd_chosen_key"], len(all_rewards)
        output["vtd_chosen_is_sibling"] = (key >= n) & (key < 2 * n)  # a sibling's key (a teacher's comes after)
        output["vtd_chosen_in_format"] = pairs & torch.tensor(in_format, dtype=torch.bool, device=device)
        return pairs, has_chosen, contrast & torch.tensor(cut, dtype=torch.bool, device=device)

    def _count_generation_batch(self, output: dict, batch_size: int, counts: list[torch.Tensor]) -> None:
        """The generation batch's global counts: the loss normalisers (0-dim tensors survive the split into
        micro-batches) and the `vtd/` metrics of the route."""
        device = self.accelerator.device
        local = torch.stack([torch.tensor(float(batch_size), device=device), *(c.float() for c in counts)])
        reduced = self.accelerator.reduce(local, reduction="sum")
        num_seq, num_distill_tokens, num_pairs, num_distill, no_chosen, skipped = reduced[:6]
        truncated, chosen_truncated, chosen_candidates = reduced[6:].tolist()
        output["vtd_num_completions"] = num_seq
        output["vtd_num_distilled_tokens"] = num_distill_tokens
        output["vtd_num_pairs"] = num_pairs

        verified = self._correctness[~torch.isnan(self._correctness)]
        metrics = self._metrics["train" if self.model.training else "eval"]
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

    @property
    def _teacher_at_generation(self) -> bool:
        return isinstance(self.teacher, ServerTeacher) or self.args.vtd_teacher_signal == "generation_batch"

    @property
    def _micro_batch_size(self) -> int:
        args = self.args
        return args.per_device_train_batch_size if self.model.training else args.per_device_eval_batch_size

    def _generation_teacher_signal(self, output: dict, distill: torch.Tensor) -> dict[str, torch.Tensor]:
        """The teacher's signal on this process's distilled completions, once for the generation batch."""
        rows = distill.nonzero().squeeze(-1)
        batch = Batch.build(output, rows, rows[:0], self._tokenizer.pad_token_id, output.get("tool_mask"))
        shape = tuple(output["completion_ids"].shape)
        return generation_signal(self.teacher, batch, rows, shape, self._micro_batch_size, self.accelerator)

    def _micro_batch_teacher_signals(self, inputs, batch: Batch, rows, is_distilled, chosen: Batch) -> tuple:
        """The teacher's signal on the micro-batch's distilled rows (`[n, L, ...]`, in their order), stored at
        generation or computed now, and on its chosen sequences (now) when `vtd_chosen_distill_weight` asks for it;
        each None when no process has a row of it (every process agrees)."""
        chosen_signal = self.teacher.signal(chosen.trimmed()) if self.args.vtd_chosen_distill_weight > 0 else None
        if not self._teacher_at_generation:
            return self.teacher.signal(batch.rows(is_distilled.nonzero().squeeze(-1)).trimmed()), chosen_signal
        return stored_signal(inputs, rows[is_distilled], self.accelerator), chosen_signal

    @torch.no_grad()
    def _reference_logps(self, output: dict, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference-policy log-probs (temperature 1) of each pair's rejected and chosen sequences, `[B]` each.

        Computed once per generation batch; a chosen sequence shared by several pairs is scored once.
        """
        rejected_logps = torch.zeros(pairs.shape, device=pairs.device)
        chosen_logps = torch.zeros(pairs.shape, device=pairs.device)
        rows = pairs.nonzero().squeeze(-1)
        keys = output["vtd_chosen_key"][rows]
        unique_keys, first = first_occurrence(keys)
        batch = Batch.build(output, rows, rows[first], self._tokenizer.pad_token_id, output.get("tool_mask"))
        logps = []
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            for _, chunk in micro_batches(batch, self._micro_batch_size, self.accelerator):
                logps.append(self._reference_sequence_logps(chunk if len(chunk) else batch.dummy())[: len(chunk)])
        logps = torch.cat(logps) if logps else torch.zeros(0, device=pairs.device)
        rejected_logps[rows] = logps[: len(rows)]
        chosen_logps[rows] = logps[len(rows) :][torch.searchsorted(unique_keys, keys)]
        return rejected_logps, chosen_logps

    def _reference_sequence_logps(self, batch: Batch) -> torch.Tensor:
        # Through the wrapper's forward, so FSDP unshards (and ZeRO-3 gathers) the parameters first.
        autocast = self.accelerator.autocast
        if self.reference_model is not None:
            unwrapped = self.accelerator.unwrap_model(self.reference_model)
            return forward_through(self.reference_model, unwrapped, sequence_logps, unwrapped, batch, autocast)
        unwrapped = self.accelerator.unwrap_model(self.model)
        with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
            return forward_through(self.model_wrapped, unwrapped, sequence_logps, unwrapped, batch, autocast)

    # ------------------------------------------------------------------ loss

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        unwrapped = self.accelerator.unwrap_model(model)
        # The whole loss runs inside the wrapper's forward, so DDP / FSDP / ZeRO-3 see one forward per micro-batch.
        loss, sums = forward_through(model, unwrapped, self._vtd_loss, unwrapped, inputs, mode)
        distill_sum, contrast_sum, margin_sum, won, pairs, chosen_nll, nll_pairs = self.accelerator.reduce(
            sums, reduction="sum"
        ).tolist()
        steps = self.args.steps_per_generation if mode == "train" else 1
        distill_norm, contrast_norm = self._normalizers(inputs)
        metrics = self._metrics[mode]
        metrics["vtd/distill_loss"].append(distill_sum * steps / distill_norm.item())
        metrics["vtd/contrast_loss"].append(contrast_sum * steps / contrast_norm.item())
        metrics["vtd/dpo_margin"].append(margin_sum / pairs if pairs else float("nan"))
        metrics["vtd/dpo_accuracy"].append(won / pairs if pairs else float("nan"))
        if self.args.vtd_chosen_nll_weight > 0:  # the chosen sequences' per-token NLL, averaged over their pairs
            metrics["vtd/chosen_nll"].append(chosen_nll / nll_pairs if nll_pairs else float("nan"))
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
        rows = (distill | pairs).nonzero().squeeze(-1)
        # One chosen sequence per key (a sequence several pairs share is scored once), in sorted key order
        chosen_keys, first = first_occurrence(inputs["vtd_chosen_key"][pairs])
        chosen_rows = pairs.nonzero().squeeze(-1)[first]
        batch = Batch.build(inputs, rows, chosen_rows, self._tokenizer.pad_token_id, loss_mask=inputs.get("tool_mask"))
        chosen = batch.rows(slice(len(rows), len(batch)))
        batch = batch if len(batch) else batch.dummy()  # a forward still runs, so every process joins the collectives
        hidden = hidden_states(student, batch, self.accelerator.autocast)
        is_distilled = distill[rows]
        signals = self._micro_batch_teacher_signals(inputs, batch, rows, is_distilled, chosen)
        lm_head = student.get_output_embeddings()
        # A dense signal needs the teacher's head, gathered (ZeRO-3, FSDP2) only when some process distils.
        dense = any(signal is not None and "hidden" in signal for signal in signals)
        teacher_head = self.teacher.head_weight if dense else None
        with maybe_gather_lm_head_ctx(lm_head.weight, teacher_head):
            weight = trainable_head_weight(lm_head)
            # Gathered on every process or on none (FSDP2's full_tensor is a collective), rows or not
            teacher_weight = None if teacher_head is None else full_tensor(teacher_head)
            # An exact zero that touches every trainable parameter keeps DDP's reducer complete on empty batches.
            loss = 0.0 * (hidden.sum() + weight.sum())
            heads = (weight, teacher_weight)
            distill_sum = self._distill_sum(hidden, heads, batch, inputs, rows, is_distilled, chosen_keys, signals)
            contrast_sums = self._contrast_sums(hidden, weight, batch, inputs, rows, chosen_keys)
        distill_norm, contrast_norm = self._normalizers(inputs)
        scale = self.accelerator.num_processes  # DDP averages gradients over processes
        if mode == "train":  # each micro-batch holds 1 / steps_per_generation of the generation batch
            scale = scale * self.args.steps_per_generation / self.current_gradient_accumulation_steps
        contrast_sum = contrast_sums[0]
        loss = loss + scale * (
            args.vtd_distill_alpha * distill_sum / distill_norm + args.vtd_contrast_beta * contrast_sum / contrast_norm
        )
        return loss, torch.stack([x.detach().float() for x in (distill_sum, *contrast_sums)])

    def _distill_sum(self, hidden, heads, batch: Batch, inputs, rows, is_distilled, chosen_keys, signals):
        """The micro-batch's summed divergence on its distilled completions and, weighted, its pairs' chosen ones."""
        args, (weight, teacher_weight), (signal, chosen_signal) = self.args, heads, signals
        options = dict(args.distill_options(), num_items=1, vocab_size=self.teacher.vocab_size)
        total = hidden.new_zeros(())
        if signal is not None and is_distilled.any():
            distilled, mask = hidden[: len(rows)][is_distilled], batch.loss_mask[: len(rows)][is_distilled].bool()
            total = signal_distillation_loss(distilled, weight, signal, teacher_weight, mask, **options)
        if chosen_signal is not None and inputs["vtd_contrast"].any():
            of_pair = torch.searchsorted(chosen_keys, inputs["vtd_chosen_key"][inputs["vtd_contrast"]])
            signal = {name: value[of_pair] for name, value in chosen_signal.items()}
            index, mask = len(rows) + of_pair, batch.loss_mask[len(rows) + of_pair].bool()
            chosen_sum = signal_distillation_loss(hidden[index], weight, signal, teacher_weight, mask, **options)
            total = total + args.vtd_chosen_distill_weight * chosen_sum
        return total

    def _contrast_sums(self, hidden, weight, batch: Batch, inputs: dict, rows, chosen_keys) -> list[torch.Tensor]:
        """The micro-batch's summed contrast losses, DPO margins, won pairs, pairs, chosen NLL and NLL pairs.

        Scored on every process, pairs or not: the log-prob kernel's backward gathers the LM head under ZeRO-3, and a
        process that skipped it would leave the others waiting."""
        args = self.args
        zero = hidden.new_zeros(())
        if args.vtd_contrast_beta == 0:
            return [zero] * 6
        pairs = inputs["vtd_contrast"]
        is_pair = pairs[rows]
        num_pairs = int(is_pair.sum())
        # The rejected completions, then the chosen sequences (after the micro-batch's rows, one per key)
        scored = torch.cat([is_pair.nonzero().squeeze(-1), torch.arange(len(rows), len(batch), device=rows.device)])
        logps = sequence_logps_from_hidden(hidden[scored], weight, batch.rows(scored))
        pair_keys = inputs["vtd_chosen_key"][pairs]
        chosen_of_pair = torch.searchsorted(chosen_keys, pair_keys)
        lengths = batch.loss_mask[scored].sum(1).to(logps.dtype).clamp(min=1.0)
        nll_mask = None
        if args.vtd_chosen_nll_source != "all":
            column = {"sibling": "vtd_chosen_is_sibling", "in_format": "vtd_chosen_in_format"}
            nll_mask = inputs[column[args.vtd_chosen_nll_source]][pairs]
        losses, margins, nll = contrast_loss(
            logps[num_pairs:][chosen_of_pair],
            logps[:num_pairs],
            inputs["vtd_ref_chosen_logps"][pairs],
            inputs["vtd_ref_rejected_logps"][pairs],
            lengths[num_pairs:][chosen_of_pair],
            lengths[:num_pairs],
            beta=args.vtd_dpo_beta,
            loss_type=args.vtd_dpo_loss_type,
            chosen_nll_weight=args.vtd_chosen_nll_weight,
            chosen_nll_mask=nll_mask,
        )
        nll_pairs = (torch.ones_like(nll) if nll_mask is None else nll_mask.to(nll.dtype)).sum()
        nll_pairs = nll_pairs if args.vtd_chosen_nll_weight > 0 else zero
        return [losses.sum(), margins.sum(), (margins > 0).float().sum(), is_pair.sum(), nll.sum(), nll_pairs]
