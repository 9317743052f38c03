"""Character-level tokenizer for the from-scratch recogniser.

One token per character (printable ASCII by default, the alphabet :mod:`htr.synth.text` renders), plus
``<pad>``, ``<s>`` (decoder start), ``</s>`` (end of line) and ``<unk>``. It is a ``tokenizers``
WordLevel model wrapped in a ``PreTrainedTokenizerFast``, so it saves as ``tokenizer.json`` next to the
model and reloads with ``AutoTokenizer.from_pretrained(<model dir>)``.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from inkbase.errors import ConfigError

PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def build_char_tokenizer(charset: str = PRINTABLE_ASCII) -> PreTrainedTokenizerFast:
    """A tokenizer with one id per character of ``charset``; encoding appends ``</s>``."""
    chars = list(dict.fromkeys(charset))
    if not chars:
        raise ConfigError("model.charset", "is empty")
    if any(len(c) != 1 for c in chars):
        raise ConfigError("model.charset", "must be a string of single characters")
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Every character is its own pre-token, spaces included, so WordLevel maps characters one to one.
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)
