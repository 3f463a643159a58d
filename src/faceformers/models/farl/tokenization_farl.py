"""Text tokenizer for FaRL: the OpenAI CLIP byte-level BPE (49,408 ids, 77-token context), built offline.

FaRL's text tower is the OpenAI CLIP text transformer, so its captions are tokenised with the CLIP BPE. The
vocabulary is not stored in this repository: `build_farl_tokenizer` reads the merges file that the `open_clip_torch`
wheel ships (`open_clip/bpe_simple_vocab_16e6.txt.gz`) at run time, without any network access.

[`FaRLTokenizer`] is a [`~transformers.CLIPTokenizer`] whose output equals `open_clip.tokenize` id for id:

* open_clip cleans every caption in Python before the BPE (`ftfy.fix_text`, `html.unescape` twice, whitespace
  collapsed, lower case). The Rust normaliser of `CLIPTokenizer` only does NFC, whitespace and lower case, so
  captions with HTML entities (`&amp;`), typographic apostrophes (`woman’s`), ligatures or full-width letters gave
  different ids. `FaRLTokenizer` applies the same cleaning before handing the text to the Rust backend.
* open_clip pads with id 0 (the byte token `"!"`), not with `<|endoftext|>`; the pad token is therefore `"!"`. To keep
  a literal `!` in a caption an ordinary BPE symbol, registered special tokens are not matched inside the text
  (`split_special_tokens=True`); `<|startoftext|>` and `<|endoftext|>` are still added around every caption.
* Truncation to 77 keeps `<|startoftext|>`, the first 75 caption tokens and `<|endoftext|>`, which is what open_clip
  produces when it cuts a long caption and overwrites the last position with the end-of-text id.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from pathlib import Path

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.utils import logging


logger = logging.get_logger(__name__)

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 77
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
PAD_TOKEN = "!"  # id 0: open_clip fills unused positions with zeros
NUM_MERGES = 49152 - 256 - 2  # the merges OpenAI CLIP keeps from the file (its first line is a header)

_INSTALL_HINT = 'The FaRL tokenizer needs the `open_clip_torch` package: pip install "faceformers[farl]"'

_ftfy_warning_shown = False


def _fix_text(text: str) -> str:
    """`ftfy.fix_text` when ftfy is installed (it comes with open_clip_torch); otherwise the text unchanged."""
    global _ftfy_warning_shown
    try:
        import ftfy
    except ImportError:
        if not _ftfy_warning_shown:
            logger.warning(
                "ftfy is not installed: FaRLTokenizer skips the ftfy text repair that open_clip applies, so ids can "
                'differ from open_clip for captions with mojibake, curly quotes or full-width characters. '
                'pip install "faceformers[farl]" to fix this.'
            )
            _ftfy_warning_shown = True
        return text
    return ftfy.fix_text(text)


def clean_caption(text: str) -> str:
    """The caption cleaning of OpenAI CLIP / open_clip (`clean="lower"`), applied before the BPE.

    Repairs the text with ftfy, decodes HTML entities (twice, so `&amp;amp;` becomes `&`), collapses every run of
    whitespace to one space, strips both ends and lower-cases.
    """
    text = html.unescape(html.unescape(_fix_text(text)))
    return " ".join(text.split()).lower()


def _clean_nested(text):
    """Applies `clean_caption` to a string, or to every string inside (nested) lists and tuples."""
    if text is None:
        return None
    if isinstance(text, str):
        return clean_caption(text)
    if isinstance(text, (list, tuple)):
        return type(text)(_clean_nested(item) for item in text)
    return text


class FaRLTokenizer(CLIPTokenizer):
    r"""
    CLIP BPE tokenizer for FaRL, with the caption cleaning and zero padding of open_clip / OpenAI CLIP.

    `tokenizer(captions, padding="max_length", max_length=77, truncation=True)["input_ids"]` equals
    `open_clip.tokenize(captions)`. Build one with [`build_farl_tokenizer`]; a saved tokenizer reloads with
    `FaRLTokenizer.from_pretrained(path)` (or `AutoTokenizer` once the class is registered) and needs only
    `tokenizer.json` and `tokenizer_config.json`.

    Args:
        vocab (`dict[str, int]`, *optional*): token to id.
        merges (`list[tuple[str, str]]`, *optional*): BPE merges, in priority order.
        unk_token, bos_token, eos_token: as in [`~transformers.CLIPTokenizer`].
        pad_token (`str`, *optional*, defaults to `"!"`): the token with id 0, which open_clip uses for padding.
        clean_text (`bool`, *optional*, defaults to `True`): apply [`clean_caption`] (ftfy, HTML unescape, whitespace,
            lower case) before tokenising, as open_clip does.
        split_special_tokens (`bool`, *optional*, defaults to `True`): do not match special-token strings inside the
            text. This keeps `"!"` in a caption an ordinary symbol although it is the pad token.
    """

    def __init__(
        self,
        vocab: dict[str, int] | None = None,
        merges: list | None = None,
        unk_token: str = EOT_TOKEN,
        bos_token: str = SOT_TOKEN,
        eos_token: str = EOT_TOKEN,
        pad_token: str = PAD_TOKEN,
        clean_text: bool = True,
        split_special_tokens: bool = True,
        **kwargs,
    ):
        kwargs.setdefault("model_max_length", CONTEXT_LENGTH)
        self.clean_text = clean_text
        super().__init__(
            vocab=vocab,
            merges=merges,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            clean_text=clean_text,
            split_special_tokens=split_special_tokens,
            **kwargs,
        )

    def _encode_plus(self, text, text_pair=None, *args, **kwargs):
        # Every encoding entry point (`__call__`, `encode`, `tokenize`) ends here, before the Rust backend.
        if self.clean_text:
            text, text_pair = _clean_nested(text), _clean_nested(text_pair)
        return super()._encode_plus(text, text_pair, *args, **kwargs)


def farl_bpe_path() -> Path:
    """Path of the CLIP merges file inside the installed `open_clip` package (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        raise ImportError(_INSTALL_HINT)
    for location in spec.submodule_search_locations or []:
        path = Path(location) / BPE_FILENAME
        if path.is_file():
            return path
    raise ImportError(f"{BPE_FILENAME} was not found in the installed open_clip package. {_INSTALL_HINT}")


def _read_vocab_and_merges(bpe_path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The OpenAI CLIP vocabulary: 256 byte symbols, the same with `</w>`, one token per merge, then SOT and EOT."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # tokenizers 0.23 wants pairs, not "a b"
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [symbol + "</w>" for symbol in byte_symbols]
    tokens += ["".join(merge) for merge in merges] + [SOT_TOKEN, EOT_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


def build_farl_tokenizer(model_max_length: int = CONTEXT_LENGTH) -> FaRLTokenizer:
    """Builds FaRL's tokenizer offline from the BPE file of the installed `open_clip_torch` package.

    The ids equal `open_clip.tokenize` (= `open_clip.get_tokenizer("ViT-B-16")`) when called with
    `padding="max_length", max_length=77, truncation=True`. Special ids: `<|startoftext|>` 49406,
    `<|endoftext|>` 49407, pad `"!"` 0; 49,408 ids in all.

    Raises:
        ImportError: `open_clip_torch` is not installed (`pip install "faceformers[farl]"`).
    """
    vocab, merges = _read_vocab_and_merges(farl_bpe_path())
    return FaRLTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


__all__ = ["FaRLTokenizer", "build_farl_tokenizer", "clean_caption", "farl_bpe_path"]
