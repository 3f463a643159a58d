from pathlib import Path

import huggingface_hub
import pytest
import yaml
from huggingface_hub import ModelCard

from faceformers.model_cards import REPORTED_SOURCE, REPRODUCED_SOURCE, load_card_facts, render_model_card


CARDS = sorted((Path(__file__).parents[1] / "model_cards").glob("*.yaml"))


@pytest.mark.parametrize("path", CARDS, ids=[p.stem for p in CARDS])
def test_card_source_has_every_fact(path):
    card = load_card_facts(path)
    assert card["model_id"].split("/")[-1] == path.stem
    assert {"weights", "training_data"} <= card["license"].keys()


@pytest.mark.parametrize("path", CARDS, ids=[p.stem for p in CARDS])
def test_rendered_card_round_trips_and_keeps_reported_and_reproduced_apart(path):
    facts = yaml.safe_load(path.read_text())
    card = render_model_card(path)
    reloaded = ModelCard(str(card))
    assert reloaded.data.to_dict() == card.data.to_dict()
    metadata = reloaded.data.to_dict()
    assert metadata["library_name"] == facts["library_name"] and metadata["pipeline_tag"] == facts["pipeline_tag"]
    assert "faceformers" in metadata["tags"] and metadata["license"] == facts["license"]["weights"]
    assert metadata["datasets"] == facts["datasets"]

    reported = facts["metrics"]["reported_by_paper"]
    results = metadata.get("model-index", [{}])[0].get("results", [])
    assert len(results) == len(reported) + len(facts["metrics"]["reproduced_by_us"])
    assert all(result["source"]["name"].startswith(REPORTED_SOURCE) for result in results[: len(reported)])
    header = f"| Task | Dataset | Metric | {REPORTED_SOURCE.capitalize()} | {REPRODUCED_SOURCE.capitalize()} |"
    if reported:
        assert header in reloaded.text
        for entry in reported:  # the authors' number in the reported column, nothing claimed in ours
            row = f"| {entry['task']} | {entry['dataset']} | {entry['metric']} | {entry['value']} | not measured yet |"
            assert row in reloaded.text
    for section in ("## How to use", "## Intended use", "## Out-of-scope use", "## Bias, risks and limitations"):
        assert section in reloaded.text


def test_reproduced_metrics_get_their_own_column_and_source():
    facts = yaml.safe_load(CARDS[0].read_text())
    facts["metrics"] = {
        "reported_by_paper": [{"task": "face-parsing", "dataset": "LaPa", "metric": "mean F1", "value": 92.1}],
        "reproduced_by_us": [
            {"task": "face-parsing", "dataset": "LaPa", "metric": "mean F1", "value": 91.7},
            {"task": "face-parsing", "dataset": "Helen", "metric": "mean F1", "value": 88.0},
        ],
    }
    card = render_model_card(facts, repo_id="someone/copy")
    assert "| face-parsing | LaPa | mean F1 | 92.1 | 91.7 |" in card.text
    assert "| face-parsing | Helen | mean F1 | — | 88.0 |" in card.text
    sources = [result["source"] for result in card.data.to_dict()["model-index"][0]["results"]]
    # the Hub groups results by (task, dataset) under one source: where we measured, the metadata holds our numbers
    assert [source["name"] for source in sources] == [REPRODUCED_SOURCE, REPRODUCED_SOURCE]
    assert sources[0]["url"] == "https://huggingface.co/someone/copy"
    assert facts["model_id"] not in card.text.split("## How to use")[1].split("##")[0]


def test_a_source_missing_facts_is_refused():
    facts = yaml.safe_load(CARDS[0].read_text())
    del facts["out_of_scope"], facts["license"]
    with pytest.raises(ValueError, match=r"missing the facts \['license', 'out_of_scope'\]"):
        render_model_card(facts)
    with pytest.raises(ValueError, match="No model card source 'no-such-model'"):
        load_card_facts("no-such-model")


def test_rendered_cards_validate_on_the_hub(hub, monkeypatch):
    """`ModelCard.validate` posts the front matter to the Hub's YAML validator (here the loopback emulator)."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    for path in CARDS:
        render_model_card(path).validate()
    assert sum(path == "/api/validate-yaml" for _, path, _ in hub.requests) >= len(CARDS)
