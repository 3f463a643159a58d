import json

import numpy as np
import pytest
import torch

from faceformers import build_farl_tokenizer
from faceformers.data.streaming import Record, read_shard, synthetic_shards
from faceformers.data.transforms import FaRLPretrainingTransform, record_caption

from ..data_utils import encoded_image


@pytest.fixture(scope="module")
def transform() -> FaRLPretrainingTransform:
    return FaRLPretrainingTransform(
        build_farl_tokenizer(), image_size=32, patch_size=8, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
        context_length=16, num_masking_patches=6, min_patches_per_block=2, seed=3,
    )  # fmt: skip


def webdataset_record(key: str, **fields) -> Record:
    return Record(key, {"jpg": encoded_image(np.random.default_rng(0), size=48), **fields})


def test_captions_come_from_txt_or_json():
    assert record_caption(webdataset_record("a", txt=b"a smiling woman")) == "a smiling woman"
    metadata = json.dumps({"id": 3, "caption": "a man with a beard"}).encode()
    assert record_caption(webdataset_record("b", json=metadata)) == "a man with a beard"
    with pytest.raises(ValueError, match=r"Record c has no caption \(fields: \['jpg', 'json'\]\)"):
        record_caption(webdataset_record("c", json=b'{"id": 3}'))


def test_a_sample_is_a_deterministic_function_of_seed_epoch_and_key(transform):
    record = webdataset_record("k", txt=b"A Face with Blond Hair!")
    sample, again = transform(record), transform(record)
    assert {k: v.shape for k, v in sample.items()} == {
        "pixel_values": (3, 32, 32), "input_ids": (16,), "attention_mask": (16,), "bool_masked_pos": (16,),
        "tokenizer_pixel_values": (3, 32, 32),
    }  # fmt: skip
    for key in sample:
        assert torch.equal(sample[key], again[key]), key
    assert 0 < int(sample["bool_masked_pos"].sum()) <= 6
    expected = build_farl_tokenizer()("A Face with Blond Hair!", padding="max_length", max_length=16)["input_ids"]
    assert sample["input_ids"].tolist() == expected
    assert 0 <= float(sample["tokenizer_pixel_values"].min()) and float(sample["tokenizer_pixel_values"].max()) <= 1
    other_epoch = transform(Record("k", record.fields, epoch=1))
    assert not torch.equal(other_epoch["bool_masked_pos"], sample["bool_masked_pos"])


def test_both_views_share_the_flip(transform):
    """The dVAE view is the same (possibly flipped) image: its mean colour matches the model view's."""
    for index in range(6):
        sample = transform(webdataset_record(f"flip{index}", txt=b"a face"))
        model_view = sample["pixel_values"] * 0.5 + 0.5
        torch.testing.assert_close(model_view.mean(dim=(1, 2)), sample["tokenizer_pixel_values"].mean(dim=(1, 2)), atol=0.02, rtol=0)
        left, right = model_view[..., :16].mean(), model_view[..., 16:].mean()
        view_left, view_right = (sample["tokenizer_pixel_values"][..., half].mean() for half in (slice(0, 16), slice(16, 32)))
        assert (left > right) == (view_left > view_right)


def test_synthetic_records_give_their_own_captions(transform):
    record = next(read_shard(synthetic_shards(4, num_shards=1, image_size=32)[0]))
    caption = record.fields["faces"].sample(record.fields["index"])["caption"]
    expected = build_farl_tokenizer()(caption, padding="max_length", max_length=16, truncation=True)["input_ids"]
    assert transform(record)["input_ids"].tolist() == expected
