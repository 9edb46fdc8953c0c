"""The chosen side of each DPO pair: the dataset's reference or a correct sibling, as token ids in the format the
student samples in (its chat template's assistant turn, with a think block for thinking-mode models)."""

import warnings

import torch
from accelerate.utils import gather_object
from trl.data_utils import is_conversational

from .config import VtDConfig
from .verify import verify

# For each `vtd_chosen_source`, where a chosen sequence is looked for, in order ("auto" chooses per prompt)
ORDERS = {
    "reference": ("reference",),
    "sibling": ("sibling",),
    "reference_then_sibling": ("reference", "sibling"),
    "sibling_then_reference": ("sibling", "reference"),
}


def opens_think_block(rendered_turn: str) -> bool:
    """Whether the chat template renders an assistant answer after an opened think block (thinking mode, Qwen3)."""
    return rendered_turn.lstrip().startswith("<think>")


class ChosenSequences:
    """Finds and renders the chosen sequences of a generation batch's DPO pairs.

    Args:
        tokenizer: the student's tokenizer.
        eos_token_ids: the ids that end a completion.
        args: the run's `VtDConfig` (`vtd_chosen_source`, `vtd_reference_column`, `vtd_reference_format`,
            `vtd_drop_truncated_chosen`).
        max_length: the most tokens of a chosen sequence.
        template_kwargs: `tools`, `chat_template` and the chat-template kwargs completions are sampled with.
        teacher: a `vtd_trl.teachers.LocalTeacher`, whose verified greedy completion is the chosen sequence of a pair
            that found none, with `vtd_chosen_teacher_generation`.
    """

    def __init__(
        self, tokenizer, eos_token_ids, args: VtDConfig, max_length: int, template_kwargs: dict, teacher=None
    ):
        self.tokenizer, self.eos_token_ids, self.args = tokenizer, eos_token_ids, args
        self.max_length, self.template_kwargs = max_length, template_kwargs
        self.teacher = teacher if args.vtd_chosen_teacher_generation else None
        self._warned_template = False

    def find(self, inputs, output, all_rewards, contrast, group_size, offset):
        """Per row of this process: the chosen completion ids (None when it has none), a key naming that sequence
        (a reference's is its group, a sibling's comes after every group's, a teacher generation's after every
        sibling's), whether the chosen sequence found ends without EOS (kept, or dropped with
        `vtd_drop_truncated_chosen`), and whether it is in the student's format (a sibling, a teacher generation, or a
        reference for which `in_format` holds)."""
        source = self.args.vtd_chosen_source
        # Every process joins the gather, whatever its own rows need
        siblings = None if source == "reference" else _gathered_completions(output)
        # NaN compares False: unverifiable completions are never chosen; nor are completions with no token left.
        correct = [
            bool(c) and (siblings is None or len(siblings[j]) > 0) for j, c in enumerate((all_rewards >= 0.5).tolist())
        ]
        references, formats_of = {}, {}

        def in_format(row, group) -> bool:
            if group not in formats_of:
                formats_of[group] = self.in_format(row["prompt"], row.get(self.args.vtd_reference_column))
            return formats_of[group]

        finders = {
            "reference": lambda row, group: self._reference(row, group, references),
            "sibling": lambda row, group: self._sibling(group, group_size, siblings, correct, len(all_rewards)),
        }
        chosen, keys, cut, formats = [], [], [], []
        for i, row in enumerate(inputs):
            group = (offset + i) // group_size
            order = source
            if source == "auto":  # the reference first when it is in the student's format, else a sibling first
                order = "reference_then_sibling" if in_format(row, group) else "sibling_then_reference"
            ids, key, is_cut = None, -1, False
            for name in ORDERS[order] if contrast[i] else ():
                ids, key, found_cut = finders[name](row, group)
                is_cut = is_cut if found_cut is None else found_cut
                if ids is not None:
                    break
            chosen.append(ids)
            keys.append(key)
            cut.append(is_cut)
            formats.append(ids is not None and (key >= len(all_rewards) or in_format(row, group)))
        if self.teacher is not None:  # every process joins the teacher's generation, whatever its rows need
            lacking = [i for i, ids in enumerate(chosen) if contrast[i] and ids is None]
            for i, (ids, key, is_cut) in self._teacher_generations(
                inputs, output, lacking, group_size, offset
            ).items():
                chosen[i], keys[i], cut[i], formats[i] = ids, 2 * len(all_rewards) + key, is_cut, True
        return chosen, keys, cut, formats

    def _teacher_generations(self, inputs, output, rows: list[int], group_size: int, offset: int) -> dict:
        """For the `rows` of this process that found no chosen sequence: the teacher's greedy completion of their
        prompt (one per prompt) where it verifies against the gold answer, as {row: (ids, group, cut)}."""
        first_row = {}
        for i in rows:
            first_row.setdefault((offset + i) // group_size, i)
        index = torch.tensor(list(first_row.values()), dtype=torch.long, device=output["prompt_ids"].device)
        generated = self.teacher.generate(
            output["prompt_ids"][index], output["prompt_mask"][index], self.max_length, self.eos_token_ids,
            self.tokenizer.pad_token_id,
        )  # fmt: skip
        verified = {}
        for (group, i), ids in zip(first_row.items(), generated):
            is_cut = not ids or ids[-1] not in self.eos_token_ids
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if ids and not (is_cut and self.args.vtd_drop_truncated_chosen):
                if verify(text, inputs[i].get(self.args.vtd_answer_column)):
                    verified[group] = (ids, group, is_cut)
        return {i: verified[(offset + i) // group_size] for i in rows if (offset + i) // group_size in verified}

    # Each finder returns (ids or None, key, cut): cut is None when it found no candidate at all.

    def _reference(self, row, group, references: dict):
        if group not in references:
            references[group] = self.reference_ids(row["prompt"], row.get(self.args.vtd_reference_column))
        ids = references[group]
        if ids is None:
            return None, -1, None
        is_cut = ids[-1] not in self.eos_token_ids
        return (None, -1, True) if is_cut and self.args.vtd_drop_truncated_chosen else (ids, group, is_cut)

    def _sibling(self, group, group_size, siblings, correct, num_completions):
        is_cut = None
        for j in range(group * group_size, (group + 1) * group_size):
            if not correct[j]:
                continue
            candidate = siblings[j][: self.max_length]
            whole = candidate[-1] in self.eos_token_ids
            if whole or not self.args.vtd_drop_truncated_chosen:  # the first correct one (whole, when dropping cut)
                return candidate, num_completions + j, not whole  # after every reference's key (its group)
            is_cut = True
        return None, -1, is_cut

    def reference_ids(self, prompt, reference: str | None) -> list[int] | None:
        """Token ids of the reference rendered as the assistant's turn, exactly as a completion would be sampled."""
        if not isinstance(reference, str) or not reference.strip():
            return None
        if is_conversational({"prompt": prompt}):
            prefix = self.render(prompt, None)
            turn = self.render(prompt, "x")[len(prefix) :]
            full = self.render(prompt, self._reference_message(reference, turn))
            if full.startswith(prefix):
                ids = self.tokenizer(full[len(prefix) :], add_special_tokens=False)["input_ids"]
                end = next((k for k, token in enumerate(ids) if token in self.eos_token_ids), None)
                ids = ids if end is None else ids[: end + 1]
                return ids[: self.max_length]
            if not self._warned_template:
                self._warned_template = True
                warnings.warn(
                    "The chat template does not render an assistant turn as a continuation of the generation prompt; "
                    "the chosen sequences are the reference text followed by EOS.",
                    stacklevel=2,
                )
        ids = self.tokenizer(reference, add_special_tokens=False)["input_ids"] + [self.eos_token_ids[0]]
        return ids[: self.max_length]

    def render(self, prompt, content: str | None) -> str:
        """The chat template's text of `prompt` with the generation prompt (`content` None) or with an assistant turn."""
        messages = prompt if content is None else [*prompt, {"role": "assistant", "content": content}]
        kwargs = self.template_kwargs
        return self.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=content is None,
            tokenize=False,
            tools=kwargs["tools"],
            chat_template=kwargs["chat_template"],
            **kwargs["chat_template_kwargs"],
        )

    def in_format(self, prompt, reference: str | None) -> bool:
        """Whether a reference is written in the format the student samples in: with its own think block when the
        chat template opens one for the answer (a thinking-mode model, as Qwen3's), any reference otherwise.

        A reference without its think block (human-written datasets such as GSM8K) is out of format for a thinking
        model, however `vtd_reference_format` places it.
        """
        if not isinstance(reference, str) or not reference.strip():
            return False
        if "</think>" in reference or not is_conversational({"prompt": prompt}):
            return True
        prefix = self.render(prompt, None)
        turn = self.render(prompt, "x")
        return not (turn.startswith(prefix) and opens_think_block(turn[len(prefix) :]))

    def _reference_message(self, reference: str, rendered_turn: str) -> str:
        """The assistant content for a reference; `rendered_turn` is how the template renders a bare answer.

        A thinking-mode completion reasons inside `<think>` and answers after it. A reference given as the bare
        answer would follow an empty think block instead, and DPO would then reward closing the block at once.
        """
        style = self.args.vtd_reference_format
        thinking = opens_think_block(rendered_turn)
        if "</think>" in reference or style == "answer" or (style == "auto" and not thinking):
            return reference
        final_line = reference.strip().splitlines()[-1]
        return f"<think>\n{reference.strip()}\n</think>\n\n{final_line}"


def _gathered_completions(output: dict) -> list[list[int]]:
    """Every process's completion ids, in global order; a completion with tool output in it is no chosen sequence
    (the policy did not write those tokens) and counts as empty."""
    tool_mask = output.get("tool_mask", torch.ones_like(output["completion_mask"]))
    has_tool_output = ((tool_mask == 0) & output["completion_mask"].bool()).any(dim=1).tolist()
    local_ids = [
        [] if tools else ids[mask.bool()].tolist()
        for ids, mask, tools in zip(output["completion_ids"], output["completion_mask"], has_tool_output)
    ]
    return [ids for chunk in gather_object([local_ids]) for ids in chunk]
