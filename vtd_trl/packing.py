"""Sequences packed for one forward pass (`Batch`), the hidden states and log-probabilities read from them, and the
helpers that keep every process in the same collectives (ZeRO-3 and FSDP gather weights in every forward)."""

from collections.abc import Callable, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import is_peft_model
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel
from trl.kernels import ChunkedLogProbFunction
from trl.models.utils import _ForwardRedirection
from trl.trainer.utils import maybe_gather_lm_head_ctx, pad

# Vocabulary columns per tile of the sequence log-probability kernel
_LOGPROB_CHUNK = 32768

#: Runs a method of a wrapped model through its wrapper's `forward`, so DDP, FSDP and ZeRO-3 see a forward.
forward_through = _ForwardRedirection()


class Batch:
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

    def trimmed(self) -> "Batch":
        """The same sequences without the columns that are padding in every row: the generation batch is padded to
        its longest completion and prompt, a micro-batch only needs its own."""
        if len(self) == 0:
            return self
        start = int(self.prompt_mask.any(0).int().argmax())  # prompts are left-padded: the first column in use
        used = self.part_mask.any(0).nonzero()
        end = int(used.max()) + 1 if len(used) else 1  # parts are right-padded: one past the last column in use
        prompt = slice(min(start, self.prompt_length - 1), None)
        parts = (x[:, :end] for x in (self.targets, self.part_mask, self.loss_mask))
        return Batch(self.prompt_ids[:, prompt], self.prompt_mask[:, prompt], *parts)

    def rows(self, index) -> "Batch":
        return Batch(
            *(x[index] for x in (self.prompt_ids, self.prompt_mask, self.targets, self.part_mask, self.loss_mask))
        )

    def dummy(self) -> "Batch":
        """One sequence with nothing to score, for processes that must join a forward they have no rows for."""
        prompt_ids = self.prompt_ids.new_zeros((1, max(self.prompt_length, 1)))
        prompt_mask = torch.ones_like(prompt_ids)
        part = self.targets.new_zeros((1, max(self.targets.shape[1], 1)))
        return Batch(prompt_ids, prompt_mask, part, torch.ones_like(part), torch.zeros_like(part))


def pad_parts(parts: list[list[int] | None], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a list of token-id lists (None counts as empty) into ids and mask of at least one column."""
    tensors = [torch.tensor(ids or [pad_id], dtype=torch.long) for ids in parts]
    masks = [torch.full((len(t),), int(bool(ids)), dtype=torch.long) for t, ids in zip(tensors, parts)]
    ids = pad(tensors, padding_value=pad_id, padding_side="right").to(device)
    return ids, pad(masks, padding_value=0, padding_side="right").to(device)


def hidden_states(model: PreTrainedModel, batch: Batch, autocast: Callable) -> torch.Tensor:
    """Last hidden states that predict the tokens after the prompt, `[n, L, H]`; `autocast` is the accelerator's."""
    if is_peft_model(model):
        model = model.base_model.model
    with autocast():
        out = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    hidden = out.last_hidden_state[:, batch.prompt_length - 1 : -1]
    # `scale * (h @ W.T) == (scale * h) @ W.T`: scaling the hidden states applies the model's logit multiplier in
    # every kernel downstream (the fused losses and the log-prob kernel take hidden states, not logits).
    scale = logit_scale(model.config)
    return hidden if scale == 1.0 else hidden * scale


def logit_scale(config) -> float:
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


def sequence_logps_from_hidden(hidden: torch.Tensor, weight: torch.Tensor, batch: Batch) -> torch.Tensor:
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


def sequence_logps(model: PreTrainedModel, batch: Batch, autocast: Callable) -> torch.Tensor:
    """`sequence_logps_from_hidden` of an unwrapped model, its LM head gathered (ZeRO-3, FSDP2) for the call."""
    head = model.get_output_embeddings()
    hidden = hidden_states(model, batch, autocast)
    with maybe_gather_lm_head_ctx(head.weight):
        return sequence_logps_from_hidden(hidden, full_tensor(head.weight), batch)


def full_tensor(weight: torch.Tensor) -> torch.Tensor:
    # Under FSDP2 the LM head is a sharded DTensor; the fused losses take the whole head, gathered once per call.
    return weight.full_tensor() if isinstance(weight, DTensor) else weight


def trainable_head_weight(head: torch.nn.Module) -> torch.Tensor:
    """The student's whole LM-head weight for the fused losses, whose gradient reaches every process.

    Under FSDP2 a head wrapped as its own unit is never called, so FSDP would neither gather it nor reduce-scatter
    its gradient (`full_tensor()`'s backward keeps each process's own share). Unsharding the unit makes FSDP reduce
    the gradient and reshard the head at the end of the backward pass, as for a unit that ran.
    """
    if isinstance(head, FSDPModule) and torch.is_grad_enabled() and head.weight.requires_grad:
        head.unshard()
        return head.weight
    return full_tensor(head.weight)


def max_over_processes(accelerator: Accelerator, value: int) -> int:
    if accelerator.num_processes == 1:
        return value
    return int(accelerator.gather(torch.tensor([value], device=accelerator.device)).max())


def micro_batches(batch: Batch, size: int, accelerator: Accelerator) -> Iterator[tuple[slice, Batch]]:
    """`batch` in parts of `size` rows, each trimmed, as many parts on every process (the most any process needs):
    a sharded model's forward is a collective, so a process with fewer rows gets empty parts to join with."""
    for k in range(max_over_processes(accelerator, -(-len(batch) // size))):
        part = slice(k * size, (k + 1) * size)
        yield part, batch.rows(part).trimmed()


def first_occurrence(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique keys and, for each, the position of its first occurrence in `keys`."""
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    positions = torch.arange(len(keys), device=keys.device)
    first = torch.full((len(unique),), len(keys), device=keys.device, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return unique, first
