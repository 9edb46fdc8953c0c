"""A character-level tokenizer built in code, with Qwen3's special tokens and chat template.

The demo and the tests cannot download Qwen's tokenizer, so they use this one: every printable ASCII
character is a token, and the Qwen3 control tokens (`<|im_start|>`, `<|im_end|>`, `<think>`, `</think>`)
are single tokens, so TRL's Qwen3 chat template renders and tokenizes exactly as it does for Qwen3.
"""

import string
from importlib.resources import files

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]


def qwen3_chat_template() -> str:
    """Qwen3's chat template (thinking mode, `enable_thinking` switch), as TRL ships it."""
    return files("trl").joinpath("chat_templates", "qwen3.jinja").read_text()


def build_char_tokenizer(extra_tokens: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A Qwen3-style tokenizer over printable ASCII characters.

    Args:
        extra_tokens: whole-word tokens added after the characters (e.g. frequent words of a task), to
            shorten sequences.
    """
    base = SPECIAL_TOKENS + THINK_TOKENS + list(string.printable)
    vocab = {token: i for i, token in enumerate(base)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in THINK_TOKENS + list(extra_tokens or [])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        chat_template=qwen3_chat_template(),
        padding_side="left",
        model_max_length=4096,
    )
