"""Held-out greedy accuracy of a model on the demo task, graded by `vtd_trl.verify.verify`.

```bash
python -m vtd_trl.demo.evaluate --model vtd_trl/demo/assets/student --num-rows 200
```
"""

import argparse
from dataclasses import dataclass

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from vtd_trl.demo.task import TASKS, demo_dataset
from vtd_trl.verify import verify


@dataclass
class EvalResult:
    """Greedy completions of a dataset and their verdicts (`None`: the gold answer could not be parsed)."""

    completions: list[str]
    verdicts: list[bool | None]

    @property
    def accuracy(self) -> float:
        """Share of rows whose completion is verified correct; rows with an unparseable gold count as wrong."""
        return sum(verdict is True for verdict in self.verdicts) / max(len(self.verdicts), 1)


@torch.no_grad()
def greedy_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[dict]],
    batch_size: int = 64,
    max_new_tokens: int = 96,
) -> list[str]:
    """Greedy completions of conversational prompts, generated in batches with the model's chat template.

    Args:
        model: causal language model.
        tokenizer: its tokenizer, with a chat template and a pad token.
        prompts: conversations, each a list of `{"role", "content"}` messages ending with the user turn.
        batch_size: prompts per `generate` call.
        max_new_tokens: generation budget per completion.
    """
    was_training = model.training
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    completions = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [
                tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
                for prompt in prompts[start : start + batch_size]
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            output = model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            completions.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return completions


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    batch_size: int = 64,
    max_new_tokens: int = 96,
    answer_column: str = "answer",
) -> EvalResult:
    """Greedy accuracy of `model` on a dataset with a conversational `prompt` column and a gold `answer_column`."""
    for column in ("prompt", answer_column):
        if column not in dataset.column_names:
            raise ValueError(
                f"The evaluation dataset has no column {column!r} (columns: {dataset.column_names}); pass a "
                "dataset in VtD's columns, e.g. `vtd_trl.demo.task.demo_dataset('test', 200)`."
            )
    completions = greedy_completions(model, tokenizer, dataset["prompt"], batch_size, max_new_tokens)
    verdicts = [verify(completion, str(gold)) for completion, gold in zip(completions, dataset[answer_column])]
    return EvalResult(completions=completions, verdicts=verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Path (or id) of the model; its tokenizer is loaded from it.")
    parser.add_argument("--num-rows", type=int, default=200, help="Held-out problems to evaluate.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the held-out draw.")
    parser.add_argument("--task", default="additions", choices=TASKS, help="The demo task of the problems.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--show", type=int, default=3, help="Completions to print.")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    dataset = demo_dataset("test", args.num_rows, seed=args.seed, task=args.task)
    result = evaluate(model, tokenizer, dataset, batch_size=args.batch_size)
    for completion, verdict, gold in list(zip(result.completions, result.verdicts, dataset["answer"]))[: args.show]:
        print(f"--- gold {gold}, verdict {verdict}\n{completion}")
    print(f"{args.model}: held-out greedy accuracy {result.accuracy:.1%} on {len(dataset)} problems")


if __name__ == "__main__":
    main()
