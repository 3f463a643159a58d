"""FaRL's tokenizer must give the ids of open_clip's CLIP tokenizer (padding and truncation to 77 included)."""

import importlib.util
import json
import random
import tarfile
from pathlib import Path

import pytest
from transformers import AutoTokenizer, CLIPTokenizer
from transformers.models.auto import tokenization_auto

from faceformers.data.synthetic import SyntheticFaces
from faceformers.models.farl.tokenization_farl import FaRLTokenizer, build_farl_tokenizer, clean_caption


PRETRAIN_CAPTIONS = Path(__file__).parents[3].parent / "shared" / "realdata" / "celebahq128_pretrain"
SOT, EOT, VOCAB_SIZE, CONTEXT = 49406, 49407, 49408, 77

HARD_CAPTIONS = [
    "",
    " ",
    "\n\t  \r\n",
    "A PHOTO OF A SMILING WOMAN",
    "A Photo Of A Young Man With Black Hair",
    "a photo of a face with blond hair.",
    "smiling!!! happy?! surprised... (maybe) [really] {yes}",
    "wow!",
    "a!b!!c",
    "hair: blond; eyes: blue - age: 25-30",
    "price $12.50, 100% cotton, 3rd row, #1 fan, 2024/01/31 @ 10:45",
    "0123456789 42 3.14159 1e-5 1,000,000",
    "don't, won't, it's, we're, they've, i'm, you'll, he'd, O'Neil's",
    "DON'T IT'S WE'RE",
    "the woman’s hair and the man’s beard, “quoted” and ‘single’",
    "café naïve façade résumé jalapeño Zoë Ångström Øre Straße",
    "İstanbul ΣΟΦΊΑ Москва 北京 東京 서울 مرحبا שלום हिन्दी",
    "ﬁne ﬂower ﬀ",
    "ＦＵＬＬ ｗｉｄｔｈ ｌｅｔｔｅｒｓ １２３",
    "a smiling face 😀😃😄 with a heart ❤️ and a thumbs up 👍🏽 👨‍👩‍👧",
    "salt &amp; pepper hair",
    "salt &amp;amp; pepper hair",
    "&lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;apos&#39; &#8217; &eacute; &nbsp;x &copy;",
    "<b>smiling</b> <i>woman</i> <br/> &",
    "multiple    spaces\n\nand\nnew lines\tand\ttabs",
    "   leading and trailing spaces   ",
    "non\u00a0breaking\u2003em\u2009thin\u3000ideographic spaces",
    "zero\u200bwidth joiner\u200d and soft\u00adhyphen",
    "control\x07chars\x1b and \x1c separators",
    "mojibake: cafÃ© Ã©tÃ© donâ€™t",
    "Ã©",
    "under_score snake_case kebab-case camelCase PascalCase",
    "email@example.com https://example.com/path?q=1&x=2",
    "a photo of a face " * 20,  # longer than 77 tokens
    "smiling woman! " * 40,
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "".join(chr(c) for c in range(0x21, 0x7F)),  # every printable ASCII character
    "a" * 300,
    "!",
    "!!",
    "!?",
    "<|startoftext|> and <|endoftext|> as text",
    "tabs\tonly",
    "ends with newline\n",
    "Ελληνικά: ΟΔΥΣΣΕΥΣ",
    "a photo of a woman with blond wavy hair wearing heavy makeup",
]

PHOTO_OF = ["Jane’s photo of", "Jane's photo of", "photo #12 of", "“a photo” of"]
SPACES = ["  ", "\n", "\t", " \n "]
EMOJI = ["😀", "😢", "❤️", "👍🏽", "🙂🙂"]
ACCENTED = {"woman": "wömàn", "man": "mán", "hair": "hâir", "photo": "phötø", "smiling": "smílíng", "older": "ölder"}


def _perturb(caption: str, rng: random.Random) -> str:
    """One to three deterministic edits of a plain caption that change casing, spacing, punctuation, script, ..."""
    edits = [
        str.upper,
        str.title,
        lambda s: s[:1].upper() + s[1:] + rng.choice([".", "!", "?!", "...", " :)"]),
        lambda s: s.replace(" and ", rng.choice([" &amp; ", " &amp;amp; ", " & ", " + "])),
        lambda s: s.replace("a photo of", rng.choice(PHOTO_OF)),
        lambda s: "".join(c + rng.choice(SPACES) if c == " " and rng.random() < 0.3 else c for c in s),
        lambda s: s + " " + rng.choice(EMOJI),
        lambda s: " ".join(ACCENTED.get(word, word) for word in s.split(" ")),
        lambda s: s.replace("with", "<b>with</b>").replace("wearing", "&quot;wearing&quot;"),
        lambda s: s.encode("utf-8").decode("latin-1") if rng.random() < 0.5 else s.replace("photo", "phÃ©to"),
        lambda s: "".join(chr(ord(c) + 0xFEE0) if "a" <= c <= "z" and rng.random() < 0.2 else c for c in s),
        lambda s: f"{rng.randint(0, 9999)} {s} {rng.randint(1, 99)}%",
        lambda s: " ".join([s] * rng.randint(3, 8)),  # often longer than 77 tokens
    ]
    for edit in rng.sample(edits, rng.randint(1, 3)):
        caption = edit(caption)
    return caption


def _with_variants(captions: list[str], num_variants: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return captions + [_perturb(rng.choice(captions), rng) for _ in range(num_variants)]


def _pretrain_captions(limit: int) -> list[str]:
    """The first `limit` distinct captions of the CelebA-HQ pre-training shards (WebDataset: `<key>.json` members)."""
    captions: dict[str, None] = {}
    for shard in sorted(PRETRAIN_CAPTIONS.glob("*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive:
                if member.name.endswith(".json"):
                    captions.setdefault(json.load(archive.extractfile(member))["caption"])
                    if len(captions) == limit:
                        return list(captions)
    return list(captions)


def _synthetic_captions(count: int) -> list[str]:
    faces = SyntheticFaces(seed=0, image_size=32, num_identities=count)
    return [faces.sample(index)["caption"] for index in range(count)]


@pytest.fixture(scope="module")
def open_clip_tokenize():
    open_clip = pytest.importorskip("open_clip", reason='open_clip_torch is needed: pip install "faceformers[farl]"')
    return open_clip.get_tokenizer("ViT-B-16")


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("open_clip", reason='open_clip_torch is needed: pip install "faceformers[farl]"')
    return build_farl_tokenizer()


def _ids(tokenizer, captions: list[str]) -> list[list[int]]:
    return tokenizer(captions, padding="max_length", max_length=CONTEXT, truncation=True)["input_ids"]


def _assert_ids_match(tokenizer, open_clip_tokenize, captions: list[str]) -> None:
    expected = open_clip_tokenize(captions).tolist()
    actual = _ids(tokenizer, captions)
    mismatches = [(caption, a, e) for caption, a, e in zip(captions, actual, expected) if a != e]
    assert not mismatches, f"{len(mismatches)} of {len(captions)} captions differ, first: {mismatches[0]}"


def test_ids_match_open_clip_on_synthetic_and_hard_captions(tokenizer, open_clip_tokenize):
    captions = _with_variants(HARD_CAPTIONS + _synthetic_captions(500), num_variants=500, seed=0)
    assert len(captions) >= 1000
    _assert_ids_match(tokenizer, open_clip_tokenize, captions)

    # the set really exercises truncation, padding and cleaning
    lengths = [len(ids) for ids in tokenizer(captions)["input_ids"]]
    assert sum(length > CONTEXT for length in lengths) >= 20 and min(lengths) == 2
    assert sum(clean_caption(c) != " ".join(c.lower().split()) for c in captions) >= 50


def test_ids_match_open_clip_on_pretrain_captions(tokenizer, open_clip_tokenize):
    if not PRETRAIN_CAPTIONS.is_dir():
        pytest.skip(f"real captions not available: {PRETRAIN_CAPTIONS} does not exist")
    captions = _pretrain_captions(limit=600)
    assert len(captions) == 600
    _assert_ids_match(tokenizer, open_clip_tokenize, _with_variants(captions, num_variants=400, seed=1))


def test_padding_truncation_and_attention_mask(tokenizer, open_clip_tokenize):
    captions = ["a smiling woman", "", "a photo of a face " * 30]
    encoded = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt")  # model_max_length 77
    assert encoded["input_ids"].shape == (3, CONTEXT)
    assert encoded["input_ids"].tolist() == open_clip_tokenize(captions).tolist()
    assert encoded["input_ids"][0].tolist()[:5] == [SOT, 320, 9200, 2308, EOT]
    assert encoded["input_ids"][2, -1] == EOT and encoded["input_ids"][1, :3].tolist() == [SOT, EOT, 0]
    assert encoded["attention_mask"].sum(-1).tolist() == [5, 2, CONTEXT]
    # padding to the longest caption, as pipelines do, pads with zeros too
    assert tokenizer(["a", "a smiling woman"], padding=True)["input_ids"][0] == [SOT, 320, EOT, 0, 0]
    # open_clip's module-level helper is the same tokenizer
    import open_clip

    assert open_clip.tokenize(captions).tolist() == encoded["input_ids"].tolist()


def test_special_ids(tokenizer):
    assert isinstance(tokenizer, CLIPTokenizer)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (SOT, EOT, 0)
    assert tokenizer.unk_token_id == EOT
    assert len(tokenizer) == VOCAB_SIZE and tokenizer.vocab_size == VOCAB_SIZE
    assert tokenizer.convert_ids_to_tokens([SOT, EOT, 0, 256]) == ["<|startoftext|>", "<|endoftext|>", "!", "!</w>"]
    assert tokenizer.model_max_length == CONTEXT
    assert tokenizer("hi")["input_ids"] == [SOT, 1883, EOT]
    assert tokenizer.decode(_ids(tokenizer, ["A smiling  WOMAN!"])[0], skip_special_tokens=True) == "a smiling woman !"


def test_save_and_reload_keep_ids(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "FaRLTokenizer" and config["pad_token"] == "!"

    import faceformers  # noqa: F401  (registers the faceformers classes with the Auto classes)

    # without the registration AutoTokenizer silently falls back to a plain TokenizersBackend, without the cleaning
    assert tokenization_auto.tokenizer_class_from_name("FaRLTokenizer") is FaRLTokenizer

    captions = _with_variants(HARD_CAPTIONS + _synthetic_captions(20), num_variants=60, seed=2)
    expected = _ids(tokenizer, captions)
    for reloaded in (FaRLTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert type(reloaded) is FaRLTokenizer
        assert reloaded.pad_token_id == 0 and reloaded.model_max_length == CONTEXT and len(reloaded) == VOCAB_SIZE
        assert _ids(reloaded, captions) == expected


def test_missing_open_clip_raises_an_actionable_import_error(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "open_clip" else find_spec(name, *args)
    )
    with pytest.raises(ImportError, match=r"pip install \"faceformers\[farl\]\""):
        build_farl_tokenizer()
