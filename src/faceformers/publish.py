"""Convert a checkpoint, write its Hub folder (weights, config, processor, model card) and upload it.

    faceformers-publish segface-swin-base-512-celebamask-hq --checkpoint model_299.pt \\
        --repo_id org/segface-swin-base-512-celebamask-hq --output_dir out/segface [--dry_run]
    faceformers-publish --pretrained_dir outputs/parsing --repo_id org/my-parser --revision v2 --private

The first form reads the card source `model_cards/<name>.yaml`, converts the authors' file with the converter of the
card's `model_class` (which checks its own output) and renders the card from the facts. The second publishes a
`save_pretrained` folder (e.g. what an example script wrote), checked by reloading it. Only safetensors and JSON/text
files are uploaded, in one commit. The token comes from the environment (`HF_TOKEN`) or `hf auth login`; it is never
taken on the command line, printed or logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi, ModelCard, ModelCardData

import faceformers

from .model_cards import load_card_facts, render_model_card
from .remote_code import add_remote_code


logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
UPLOADABLE_SUFFIXES = (".safetensors", ".json", ".md", ".txt", ".py")


# ----- converters: (checkpoint, output_dir, **arguments) -> model; each checks its own output -----


def _convert_mcf(checkpoint: Path, output_dir: Path, **arguments: Any):
    from .models.mcf.convert_mcf_to_hf import convert_checkpoint

    return convert_checkpoint(checkpoint, output_dir, **arguments)


def _convert_farl(checkpoint: Path, output_dir: Path, **arguments: Any):
    from .models.farl.convert_farl_to_hf import convert_checkpoint

    return convert_checkpoint(checkpoint, output_dir, **arguments)


def _convert_segface(checkpoint: Path, output_dir: Path, variant: str):
    from .models.segface.convert_segface_to_hf import convert_checkpoint

    return convert_checkpoint(checkpoint, variant, output_dir)


def _convert_part_fvit(checkpoint: Path, output_dir: Path, **arguments: Any):
    from .models.part_fvit.convert_part_fvit_to_hf import convert_checkpoint

    return convert_checkpoint(checkpoint, output_dir, **arguments)


CONVERTERS: dict[str, Callable[..., Any]] = {
    "mcf": _convert_mcf,
    "farl": _convert_farl,
    "segface": _convert_segface,
    "part_fvit": _convert_part_fvit,
}
# The pipeline a checkpoint of each family serves, for cards written without a card source.
PIPELINE_TAGS = {
    "mcf": "image-feature-extraction",
    "farl": "zero-shot-image-classification",
    "segface": "image-segmentation",
    "part_fvit": "image-feature-extraction",
}


# ----- folder checks -----


def _refuse_pickles(folder: Path, files: list[Path]) -> None:
    pickles = [str(path.relative_to(folder)) for path in files if path.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ValueError(
            f"Refusing to publish {folder}: it contains pickle files {pickles}. Only safetensors weights and "
            f"JSON/text files ({', '.join(UPLOADABLE_SUFFIXES)}) are published; convert or delete them first."
        )


def check_uploadable(folder: str | Path) -> list[Path]:
    """The files of `folder`, refusing pickles and anything that is not safetensors, JSON or text."""
    folder = Path(folder)
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    _refuse_pickles(folder, files)
    others = [str(path.relative_to(folder)) for path in files if path.suffix not in UPLOADABLE_SUFFIXES]
    if others:
        raise ValueError(
            f"Refusing to publish {folder}: expected only {', '.join(UPLOADABLE_SUFFIXES)} files, got {others}."
        )
    if not any(path.suffix == ".safetensors" for path in files):
        raise ValueError(f"Refusing to publish {folder}: it has no .safetensors weights.")
    return files


def _model_type(folder: Path) -> str:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} has no config.json: expected a folder written by `save_pretrained`.")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in CONVERTERS:
        raise ValueError(f"{config_file}: expected a faceformers model type {sorted(CONVERTERS)}, got {model_type!r}.")
    return model_type


def check_reloads(folder: Path) -> str:
    """Load the saved model with its own class: every weight must be in the files and used. Returns the class name."""
    architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    if len(architectures) != 1 or not hasattr(faceformers, architectures[0]):
        raise ValueError(
            f"{folder / 'config.json'}: expected one faceformers class in `architectures`, got {architectures}."
        )
    model_class = getattr(faceformers, architectures[0])
    _, info = model_class.from_pretrained(folder, output_loading_info=True)
    problems = {key: value for key, value in info.items() if value and key != "error_msgs"} | (
        {"error_msgs": info["error_msgs"]} if info.get("error_msgs") else {}
    )
    if problems:
        raise ValueError(f"{folder} does not reload cleanly as {model_class.__name__}: {problems}")
    return model_class.__name__


# ----- cards for folders without a card source -----


def minimal_card(repo_id: str, model_class: str, model_type: str) -> ModelCard:
    """A card that says what the checkpoint is and that its uses, data and limits are undocumented."""
    data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="faceformers",
        pipeline_tag=PIPELINE_TAGS[model_type],
        tags=["faceformers", model_type.replace("_", "-")],
    )
    body = (
        f"# {repo_id.split('/')[-1]}\n\n"
        f"A `{model_class}` trained or converted with `faceformers`; load it with "
        f"`import faceformers` then `transformers.AutoModel.from_pretrained(\"{repo_id}\")`.\n\n"
        "No card source was given when it was published: its training data, licence, intended use, limitations and "
        "scores are undocumented. Do not use it for decisions about people.\n"
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


# ----- building and uploading the folder -----


def build_folder(
    output_dir: str | Path,
    card: str | Path | Mapping[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    pretrained_dir: str | Path | None = None,
    repo_id: str | None = None,
    converter_arguments: Mapping[str, Any] | None = None,
    remote_code: bool = False,
) -> Path:
    """Write the folder to publish: converted (`checkpoint`, needs `card`) or copied (`pretrained_dir`) weights,
    config, processor files, `README.md` and, with `remote_code`, the code files. Returns `output_dir`."""
    if (checkpoint is None) == (pretrained_dir is None):
        raise ValueError("Give exactly one of `checkpoint` (an original file) and `pretrained_dir` (a saved folder).")
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"The output folder {output_dir} is not empty; give a new or empty folder.")
    output_dir.mkdir(parents=True, exist_ok=True)
    facts = load_card_facts(card) if card is not None else None
    if checkpoint is not None and facts is None:
        raise ValueError("Converting an original checkpoint needs its card source (model_cards/ name or path).")
    repo_id = repo_id or (facts["model_id"] if facts else None)
    if repo_id is None:
        raise ValueError("Give `repo_id` (org/name) for a folder without a card source.")

    if checkpoint is not None:
        model_type = getattr(faceformers, facts["model_class"]).config_class.model_type
        arguments = {**(facts["original"].get("converter_arguments") or {}), **(converter_arguments or {})}
        CONVERTERS[model_type](Path(checkpoint), output_dir, **arguments)
    else:
        # the top-level files only: sub-folders hold resumable training states, which are not published
        pretrained_dir = Path(pretrained_dir)
        _model_type(pretrained_dir)
        files = sorted(path for path in pretrained_dir.iterdir() if path.is_file() and path.name != "README.md")
        _refuse_pickles(pretrained_dir, files)
        for path in files:
            if path.suffix in UPLOADABLE_SUFFIXES:
                shutil.copy2(path, output_dir / path.name)
            else:
                logger.info("Not publishing %s (not a safetensors, JSON or text file)", path.name)

    model_type = _model_type(output_dir)
    model_class = check_reloads(output_dir)
    if facts is not None and facts["model_class"] != model_class:
        raise ValueError(f"The card source describes a {facts['model_class']}, the folder holds a {model_class}.")
    model_card = render_model_card(facts, repo_id=repo_id) if facts else minimal_card(repo_id, model_class, model_type)
    model_card.save(output_dir / "README.md")
    if remote_code:
        add_remote_code(output_dir)
    check_uploadable(output_dir)
    logger.info("Wrote %s (%s) to %s", repo_id, model_class, output_dir)
    return output_dir


def upload_folder(
    folder: str | Path,
    repo_id: str,
    revision: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
):
    """Create the repository (and branch) if needed and upload `folder` in one commit; returns the `CommitInfo`."""
    check_uploadable(folder)
    api = HfApi()  # the token comes from HF_TOKEN or the saved login, never from here
    repo = api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        revision=revision,
        commit_message=commit_message or f"Publish {repo_id} with faceformers {faceformers.__version__}",
        allow_patterns=[f"*{suffix}" for suffix in UPLOADABLE_SUFFIXES],
    )
    logger.info("Published %s to %s (commit %s)", folder, repo.repo_id, commit.oid)
    return commit


def publish_pretrained(
    pretrained_dir: str | Path,
    repo_id: str,
    output_dir: str | Path,
    card: str | Path | None = None,
    revision: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
):
    """What `--push_to_hub` of the example scripts calls: the `--pretrained_dir` form of the command."""
    folder = build_folder(output_dir, card=card, pretrained_dir=pretrained_dir, repo_id=repo_id)
    return upload_folder(folder, repo_id, revision=revision, private=private, commit_message=commit_message)


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="faceformers-publish", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("card", nargs="?", help="Card source: a name in model_cards/ or a .yaml path.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="The authors' checkpoint file, converted with the model's converter.")
    source.add_argument("--pretrained_dir", help="A folder written by save_pretrained (e.g. by an example script).")
    parser.add_argument("--repo_id", help="Hub repository org/name (default: the card's model_id).")
    parser.add_argument("--output_dir", required=True, help="New or empty folder for the files to publish.")
    parser.add_argument("--revision", help="Branch to commit to (created from main if needed).")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--remote_code", action="store_true", help="Add code + auto_map for trust_remote_code=True.")
    parser.add_argument("--commit_message")
    parser.add_argument(
        "--converter_argument", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
        help="Extra converter argument (repeatable), e.g. teacher_checkpoint=moco.pth.",
    )
    parser.add_argument("--dry_run", action="store_true", help="Stop after writing the folder.")
    args = parser.parse_args(argv)
    if args.checkpoint and not args.card:
        parser.error("--checkpoint needs a card source (the first argument).")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = build_folder(
        args.output_dir,
        card=args.card,
        checkpoint=args.checkpoint,
        pretrained_dir=args.pretrained_dir,
        repo_id=args.repo_id,
        converter_arguments=dict(args.converter_argument),
        remote_code=args.remote_code,
    )
    if args.dry_run:
        logger.info("Dry run: not uploading %s", folder)
        return
    repo_id = args.repo_id or load_card_facts(args.card)["model_id"]
    upload_folder(folder, repo_id, args.revision, args.private, args.commit_message)


if __name__ == "__main__":
    main()
