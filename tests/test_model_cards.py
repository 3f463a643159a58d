from pathlib import Path

import pytest
import yaml


CARDS = sorted((Path(__file__).parents[1] / "model_cards").glob("*.yaml"))
REQUIRED = {
    "model_id", "model_class", "pipeline_tag", "library_name", "tags", "base_architecture", "paper", "original",
    "license", "datasets", "metrics", "intended_use", "out_of_scope", "bias_and_limitations", "how_to_use", "citation",
}


@pytest.mark.parametrize("path", CARDS, ids=[p.stem for p in CARDS])
def test_card_source_has_every_fact(path):
    card = yaml.safe_load(path.read_text())
    assert REQUIRED <= card.keys(), f"missing {REQUIRED - card.keys()}"
    assert card["model_id"].split("/")[-1] == path.stem
    assert "faceformers" in card["tags"]
    assert {"reported_by_paper", "reproduced_by_us"} == card["metrics"].keys()
    assert {"weights", "training_data"} <= card["license"].keys()


def test_there_is_a_card_for_mcf():
    assert any(p.stem.startswith("mcf-") for p in CARDS)
