"""Hub model cards rendered from the facts in `model_cards/<name>.yaml`.

A card source holds facts only (ids, paper, original checkpoint, licences, metrics, uses); this module turns them into
a `huggingface_hub.ModelCard`: YAML front matter (`library_name`, `pipeline_tag`, `tags`, `license`, `datasets`,
`base_model`, `model-index`) and a Markdown body in which the metrics reported by the authors and the metrics we
reproduced stay in separate columns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData


# The facts every published card must state.
REQUIRED_FACTS = (
    "model_id", "model_class", "pipeline_tag", "library_name", "tags", "base_architecture", "paper", "original",
    "license", "datasets", "metrics", "intended_use", "out_of_scope", "bias_and_limitations", "how_to_use", "citation",
)
# A checkout keeps its card sources next to `src/`.
CARD_SOURCES_DIR = Path(__file__).resolve().parents[2] / "model_cards"

REPORTED_SOURCE = "reported by the authors"
REPRODUCED_SOURCE = "reproduced with faceformers"


def find_card_source(name: str | Path) -> Path:
    """A card source by path, or by name (`segface-swin-base-512-celebamask-hq`) in `model_cards/`."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = CARD_SOURCES_DIR / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in CARD_SOURCES_DIR.glob("*.yaml"))
    raise ValueError(f"No model card source {name!r}: expected a .yaml file or one of {known} in {CARD_SOURCES_DIR}.")


def load_card_facts(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read a card source (a path, a name in `model_cards/`, or an already-loaded mapping) and check its facts."""
    facts = dict(source) if isinstance(source, Mapping) else yaml.safe_load(find_card_source(source).read_text())
    missing = [key for key in REQUIRED_FACTS if key not in facts]
    if missing:
        raise ValueError(f"The model card source {facts.get('model_id', source)!r} is missing the facts {missing}.")
    metrics = facts["metrics"]
    if not isinstance(metrics, Mapping) or set(metrics) != {"reported_by_paper", "reproduced_by_us"}:
        raise ValueError(f"`metrics` must have exactly `reported_by_paper` and `reproduced_by_us`, got {metrics!r}.")
    if "faceformers" not in facts["tags"]:
        raise ValueError(f"`tags` must contain 'faceformers', got {facts['tags']}.")
    return facts


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def _eval_results(facts: Mapping[str, Any]) -> list[EvalResult]:
    """model-index entries; the source tells the authors' numbers from ours (the Hub needs a URL with a source).

    The Hub groups results by task and dataset under one source, so where we reproduced a (task, dataset) only our
    numbers go into the metadata; the body table shows both."""
    paper = facts["paper"]
    default_urls = {
        "reported_by_paper": (
            f"https://arxiv.org/abs/{paper['arxiv']}" if paper.get("arxiv") else facts["original"]["repository"]
        ),
        "reproduced_by_us": f"https://huggingface.co/{facts['model_id']}",
    }
    reproduced = {(entry["task"], entry["dataset"]) for entry in facts["metrics"]["reproduced_by_us"] or []}
    results = []
    for key, source_name in (("reported_by_paper", REPORTED_SOURCE), ("reproduced_by_us", REPRODUCED_SOURCE)):
        for entry in facts["metrics"][key] or []:
            if key == "reported_by_paper" and (entry["task"], entry["dataset"]) in reproduced:
                continue
            results.append(
                EvalResult(
                    task_type=entry["task"],
                    dataset_type=_slug(entry["dataset"]),
                    dataset_name=entry["dataset"],
                    dataset_split=entry.get("split"),
                    metric_type=_slug(entry["metric"]),
                    metric_name=entry["metric"],
                    metric_value=entry["value"],
                    source_name=f"{source_name} ({entry['source']})" if entry.get("source") else source_name,
                    source_url=entry.get("source_url", default_urls[key]),
                    verified=False,
                )
            )
    return results or None


def card_data_from_facts(facts: Mapping[str, Any]) -> ModelCardData:
    licence = facts["license"]
    return ModelCardData(
        model_name=facts["model_id"].split("/")[-1],
        library_name=facts["library_name"],
        pipeline_tag=facts["pipeline_tag"],
        tags=list(facts["tags"]),
        license=licence["weights"],
        license_name=licence.get("weights_name"),
        license_link=licence.get("weights_link"),
        datasets=list(facts["datasets"]),
        base_model=facts.get("base_model"),
        eval_results=_eval_results(facts),
    )


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    """One row per (task, dataset, metric); the authors' number and ours in separate columns."""
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for key in ("reported_by_paper", "reproduced_by_us"):
        for entry in metrics[key] or []:
            row = rows.setdefault((entry["task"], entry["dataset"], entry["metric"]), {})
            row[key] = f"{entry['value']}"
    if not rows:
        return "Neither the authors' scores nor our own have been recorded for this checkpoint yet."
    lines = [
        f"| Task | Dataset | Metric | {REPORTED_SOURCE.capitalize()} | {REPRODUCED_SOURCE.capitalize()} |",
        "|---|---|---|---|---|",
    ]
    for (task, dataset, metric), values in rows.items():
        reported = values.get("reported_by_paper", "—")
        reproduced = values.get("reproduced_by_us", "not measured yet")
        lines.append(f"| {task} | {dataset} | {metric} | {reported} | {reproduced} |")
    return "\n".join(lines)


def _original_section(facts: Mapping[str, Any]) -> str:
    original = facts["original"]
    lines = [f"- Repository: {original['repository']}"]
    if original.get("commit"):
        lines.append(f"- Commit: `{original['commit']}`")
    lines.append(f"- Checkpoint: {original['checkpoint']}")
    if original.get("converted_with"):
        lines.append(f"- Converted with: `{' '.join(str(original['converted_with']).split())}`")
    parity = facts.get("parity")
    if parity:
        lines.append(f"- Conversion check: max |Δ| {parity['max_abs_diff']:.1e} between {parity['compared']}.")
    return "\n".join(lines)


def _paper_line(paper: Mapping[str, Any]) -> str:
    line = f"*{paper['title']}*"
    if paper.get("authors"):
        line += f", {', '.join(paper['authors'])}"
    if paper.get("venue"):
        line += f" ({paper['venue']})"
    if paper.get("arxiv"):
        line += f", [arXiv:{paper['arxiv']}](https://arxiv.org/abs/{paper['arxiv']})"
    return line + "."


def render_body(facts: Mapping[str, Any]) -> str:
    licence = facts["license"]
    weights_licence = licence["weights"] + (f" ({licence['weights_note']})" if licence.get("weights_note") else "")
    sections = [
        f"# {facts['model_id'].split('/')[-1]}",
        f"`{facts['model_class']}` of the `faceformers` package: "
        f"{facts['base_architecture']}.",
        f"Paper: {_paper_line(facts['paper'])}",
        "## How to use",
        f"```python\n{facts['how_to_use'].rstrip()}\n```",
    ]
    if facts.get("preprocessing"):
        sections += ["## Preprocessing", facts["preprocessing"]]
    sections += [
        "## Original checkpoint",
        _original_section(facts),
        "## Results",
        "Scores the authors reported and scores we measured on the converted weights are kept apart.",
        _metrics_table(facts["metrics"]),
    ]
    training = facts.get("training")
    if training:
        sections += ["## Training", "\n".join(f"- {key.capitalize()}: {value}" for key, value in training.items())]
    sections += [
        "## Licences",
        f"- Weights: {weights_licence}\n- Training data: {licence['training_data']}\n"
        f"- Datasets: {', '.join(facts['datasets'])}",
        "## Intended use",
        facts["intended_use"].strip(),
        "## Out-of-scope use",
        facts["out_of_scope"].strip(),
        "## Bias, risks and limitations",
        facts["bias_and_limitations"].strip(),
        "## Citation",
        f"```bibtex\n{facts['citation'].rstrip()}\n```",
    ]
    return "\n\n".join(sections) + "\n"


def render_model_card(source: str | Path | Mapping[str, Any], repo_id: str | None = None) -> ModelCard:
    """The Hub card (front matter + body) of one card source; `repo_id` replaces the source's `model_id` (in the
    usage example too) when the checkpoint is published under another name."""
    facts = load_card_facts(source)
    if repo_id is not None and repo_id != facts["model_id"]:
        facts["how_to_use"] = facts["how_to_use"].replace(facts["model_id"], repo_id)
        facts["model_id"] = repo_id
    data = card_data_from_facts(facts)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{render_body(facts)}")
