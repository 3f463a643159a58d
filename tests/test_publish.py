"""`faceformers-publish`: folder checks and cards in-process; the publish -> fresh-cache round trips against the
loopback Hub emulator, with the unmodified huggingface_hub / transformers clients in subprocesses (their HF_* settings
are read at import time)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from faceformers import MCFModel
from faceformers import publish
from faceformers.publish import build_folder, upload_folder

from .publish_checks import FAMILIES, folder_digest, save_tiny_folder
from .script_utils import ROOT


def run_client(script: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Run Python code in a fresh process (cwd: the repository root, so `tests.publish_checks` imports)."""
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def publish_command(*args: str) -> str:
    return f"from faceformers.publish import main; main({list(args)!r})"


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """A saved tiny model of each family, and what it outputs through the Auto classes and the pipeline. The outputs
    come from a fresh process, like the loads they are compared with (this process's thread settings may differ)."""
    root = tmp_path_factory.mktemp("tiny")
    for family in FAMILIES:
        save_tiny_folder(family, root / family)
    run_client(
        f"""
import torch
from tests.publish_checks import FAMILIES, family_outputs
torch.save({{family: family_outputs({str(root)!r} + "/" + family, family) for family in FAMILIES}}, {str(root / "outputs.pt")!r})
""",
        {**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    expected = torch.load(root / "outputs.pt", weights_only=False)
    return {family: (root / family, expected[family]) for family in FAMILIES}


def assert_same_outputs(actual: dict, expected: dict) -> None:
    assert actual["model_class"] == expected["model_class"]
    for key in ("output", "pipeline"):
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


# ----- in-process: what goes into the folder -----


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".pkl"])
def test_a_folder_with_a_pickle_is_refused(tiny_folders, tmp_path, suffix):
    source = tmp_path / "source"
    source.mkdir()
    for path in tiny_folders["mcf"][0].iterdir():
        (source / path.name).write_bytes(path.read_bytes())
    torch.save({"w": torch.zeros(1)}, source / f"extra{suffix}")
    with pytest.raises(ValueError, match=rf"Refusing to publish .*source: it contains pickle files \['extra\{suffix}'\]"):
        build_folder(tmp_path / "out", pretrained_dir=source, repo_id="org/x")

    # a ready folder is checked again right before the upload, before any request is made
    (tmp_path / "ready").mkdir()
    (tmp_path / "ready" / "model.safetensors").write_bytes(b"")
    (tmp_path / "ready" / "sub").mkdir()
    torch.save({}, tmp_path / "ready" / "sub" / f"state{suffix}")
    with pytest.raises(ValueError, match=rf"pickle files \['sub/state\{suffix}'\]"):
        upload_folder(tmp_path / "ready", "org/x")


def test_only_safetensors_and_json_text_files_and_no_empty_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "weights.npz").write_bytes(b"x")
    (tmp_path / "a" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"expected only .safetensors, .json, .md, .txt, .py files, got \['weights.npz'\]"):
        publish.check_uploadable(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="has no .safetensors weights"):
        publish.check_uploadable(tmp_path / "b")


def test_dry_run_writes_the_folder_and_uploads_nothing(tiny_folders, tmp_path, monkeypatch):
    monkeypatch.setattr(publish, "HfApi", lambda *args, **kwargs: pytest.fail("a dry run must not contact the Hub"))
    source, _ = tiny_folders["segface"]
    (source / "metrics.json").write_text("{}")  # example scripts write one: it travels along
    folder = tmp_path / "out"
    publish.main(["--pretrained_dir", str(source), "--repo_id", "org/parser", "--output_dir", str(folder), "--dry_run"])
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["README.md", "config.json", "metrics.json", "model.safetensors", "preprocessor_config.json"]
    card = (folder / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["pipeline_tag"] == "image-segmentation" and "faceformers" in metadata["tags"]
    assert "undocumented" in card
    with pytest.raises(ValueError, match="is not empty"):
        publish.main(["--pretrained_dir", str(source), "--repo_id", "org/parser", "--output_dir", str(folder), "--dry_run"])


def test_convert_an_original_checkpoint_with_its_card(tmp_path):
    """The first form of the command: card source + the authors' file -> converter (with its own checks) -> folder."""
    from .models.mcf.test_convert_mcf import timm_vit

    original = timm_vit()
    torch.save({"model": original.state_dict()}, tmp_path / "mcf_encoder.pth")
    folder = tmp_path / "out"
    publish.main([
        "mcf-vit-base-patch16-224-laionface", "--checkpoint", str(tmp_path / "mcf_encoder.pth"),
        "--repo_id", "me/mcf-tiny", "--output_dir", str(folder), "--converter_argument", "num_attention_heads=4",
        "--dry_run",
    ])  # fmt: skip
    model = MCFModel.from_pretrained(folder)
    assert model.config.num_attention_heads == 4 and (folder / "preprocessor_config.json").is_file()
    card = (folder / "README.md").read_text()
    assert 'AutoModel.from_pretrained("me/mcf-tiny")' in card and "| LaPa | F1 | 93.96 | not measured yet |" in card
    assert "license: other" in card


def test_card_and_checkpoint_must_agree(tiny_folders, tmp_path):
    with pytest.raises(ValueError, match="describes a SegFaceForSemanticSegmentation, the folder holds a MCFModel"):
        build_folder(tmp_path / "out", card="segface-swin-base-512-lapa", pretrained_dir=tiny_folders["mcf"][0])
    with pytest.raises(ValueError, match="needs its card source"):
        build_folder(tmp_path / "out2", checkpoint=tmp_path / "x.pth")
    with pytest.raises(SystemExit):
        publish.parse_args(["--checkpoint", "x.pth", "--output_dir", str(tmp_path)])


# ----- against the loopback Hub -----


@pytest.mark.parametrize("family", list(FAMILIES))
def test_publish_then_load_from_a_fresh_cache(family, tiny_folders, hub, hub_env, tmp_path):
    source, expected = tiny_folders[family]
    repo_id = f"org/tiny-{family.replace('_', '-')}"
    run_client(publish_command("--pretrained_dir", str(source), "--repo_id", repo_id, "--output_dir", str(tmp_path / "out")), hub_env)
    assert {path.name for path in (tmp_path / "out").iterdir()} <= set(hub.list_files(repo_id))

    run_client(
        f"""
import torch
from huggingface_hub import snapshot_download
from tests.publish_checks import family_outputs, folder_digest
outputs = family_outputs({repo_id!r}, {family!r})
outputs["digest"] = folder_digest(snapshot_download({repo_id!r}))
torch.save(outputs, {str(tmp_path / "outputs.pt")!r})
""",
        {**hub_env, "HF_HOME": str(tmp_path / "fresh_home")},
    )
    actual = torch.load(tmp_path / "outputs.pt", weights_only=False)
    assert_same_outputs(actual, expected)
    published = folder_digest(tmp_path / "out")
    assert {name: digest for name, digest in actual["digest"].items() if name in published} == published


def test_branch_revision_and_private_repository(tiny_folders, hub, hub_env, tmp_path):
    source, expected_main = tiny_folders["mcf"]
    repo_id = "org/tiny-mcf-branches"
    run_client(publish_command("--pretrained_dir", str(source), "--repo_id", repo_id, "--output_dir", str(tmp_path / "v1"), "--private"), hub_env)

    changed = MCFModel.from_pretrained(source)
    with torch.no_grad():
        changed.layernorm.weight.mul_(2)
    changed.save_pretrained(tmp_path / "source_v2")
    (tmp_path / "source_v2" / "preprocessor_config.json").write_bytes((source / "preprocessor_config.json").read_bytes())
    run_client(publish_command("--pretrained_dir", str(tmp_path / "source_v2"), "--repo_id", repo_id, "--output_dir", str(tmp_path / "v2"), "--revision", "v2"), hub_env)
    assert hub.repo_private(repo_id) and set(hub.branches(repo_id)) == {"main", "v2"}

    run_client(
        f"""
import torch
from tests.publish_checks import family_outputs
outputs = {{"main": family_outputs({repo_id!r}, "mcf"), "v2": family_outputs({repo_id!r}, "mcf", revision="v2")}}
outputs["local_v2"] = family_outputs({str(tmp_path / "source_v2")!r}, "mcf")
torch.save(outputs, {str(tmp_path / "outputs.pt")!r})
""",
        {**hub_env, "HF_HOME": str(tmp_path / "fresh_home")},
    )
    actual = torch.load(tmp_path / "outputs.pt", weights_only=False)
    assert_same_outputs(actual["main"], expected_main)
    assert_same_outputs(actual["v2"], actual["local_v2"])
    assert not torch.equal(actual["main"]["output"], actual["v2"]["output"])


def test_remote_code_checkpoints_load_without_faceformers(tiny_folders, hub, hub_env, tmp_path):
    """`--remote_code`: the code travels with the weights; a process where `import faceformers` fails loads every
    family with `trust_remote_code=True` and gets the same outputs."""
    commands = [
        publish_command("--pretrained_dir", str(tiny_folders[family][0]), "--repo_id", f"org/remote-{family.replace('_', '-')}",
                        "--output_dir", str(tmp_path / family), "--remote_code")
        for family in FAMILIES
    ]  # fmt: skip
    run_client("\n".join(commands), hub_env)
    run_client(
        f"""
import sys
sys.modules["faceformers"] = None  # any import of the package now fails
import torch
from tests.publish_checks import FAMILIES, family_outputs
outputs = {{family: family_outputs("org/remote-" + family.replace("_", "-"), family, trust_remote_code=True) for family in FAMILIES}}
assert "faceformers" not in {{module.split(".")[0] for module in sys.modules if sys.modules[module] is not None}}
torch.save(outputs, {str(tmp_path / "outputs.pt")!r})
""",
        {**hub_env, "HF_HOME": str(tmp_path / "fresh_home")},
    )
    actual = torch.load(tmp_path / "outputs.pt", weights_only=False)
    for family, (_, expected) in tiny_folders.items():
        assert_same_outputs(actual[family], expected)


def test_the_token_never_appears_in_logs_or_errors(tiny_folders, hub, hub_env, tmp_path):
    token = "hf_SecretTokenThatMustNotLeak0123456789"
    env = {**hub_env, "HF_TOKEN": token, "HF_HUB_VERBOSITY": "debug", "TRANSFORMERS_VERBOSITY": "debug"}
    command = [str(Path(sys.executable).parent / "faceformers-publish")]  # the console script
    arguments = ["--pretrained_dir", str(tiny_folders["part_fvit"][0])]

    def publish_to(repo_id: str, output_dir: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, *arguments, "--repo_id", repo_id, "--output_dir", str(output_dir)],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    result = publish_to("org/token-check", tmp_path / "ok")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Published" in result.stderr
    assert any(authorization == f"Bearer {token}" for _, _, authorization in hub.requests)  # it was used...
    hub.fail_commits = "the server refused the commit"
    try:
        failed = publish_to("org/token-check-refused", tmp_path / "refused")
    finally:
        hub.fail_commits = None
    assert failed.returncode != 0 and "the server refused the commit" in failed.stderr
    for run in (result, failed):  # ...and never shown
        assert token not in run.stdout and token not in run.stderr
        assert token[3:20] not in run.stdout + run.stderr


def test_example_push_to_hub_goes_through_the_publish_path(hub, hub_env, tmp_path):
    """`--push_to_hub` of the example scripts (here face parsing, two steps) publishes with a card and no pickles."""
    run_client(
        f"""
from tests.script_utils import load_script
from tests.examples.test_train_face_parsing import arguments
load_script("examples/train_face_parsing.py").main(arguments({str(tmp_path / "run")!r}, "--max_steps", "2",
    "--checkpointing_steps", "1", "--push_to_hub", "--hub_model_id", "org/pushed-parser", "--hub_revision", "run-1"))
""",
        hub_env,
    )
    files = hub.list_files("org/pushed-parser", revision="run-1")
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "metrics.json"} <= set(files)
    assert not any(name.endswith((".bin", ".pkl", ".pt", ".pth")) or "/" in name for name in files)  # no checkpoints
