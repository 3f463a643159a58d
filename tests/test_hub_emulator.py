"""The loopback Hub emulator (tests/hub_emulator.py), driven by the unmodified huggingface_hub, transformers and
datasets clients. Client code runs in subprocesses because the clients read HF_ENDPOINT & co. at import time."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .hub_emulator import HubEmulator, client_env


def run_client(script: str, env: dict[str, str], *args: object) -> str:
    """Run `script` with `python -c` (extra `args` in sys.argv[1:]) and return its stdout; fail with its stderr."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"client script failed with code {result.returncode}:\n{result.stderr[-5000:]}"
    return result.stdout


README = """---
library_name: faceformers
pipeline_tag: image-segmentation
tags:
- faceformers
---

# Toy

A toy repository.
"""


HUB_API_SCRIPT = """
    import hashlib, json, sys
    from pathlib import Path
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    folder, fresh_cache = Path(sys.argv[1]), Path(sys.argv[2])
    api = HfApi()
    assert api.whoami()["name"]

    repo_url = api.create_repo("org/toy", private=True)
    assert repo_url.repo_id == "org/toy" and repo_url.repo_type == "model", repo_url
    api.create_repo("org/toy", private=True, exist_ok=True)  # 409 -> success
    commit = api.upload_folder(repo_id="org/toy", folder_path=folder, commit_message="Add toy")

    local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    info = api.model_info("org/toy", files_metadata=True)
    assert info.sha == commit.oid, (info.sha, commit.oid)
    assert {s.rfilename for s in info.siblings} == {".gitattributes", *local}, info.siblings
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert all(sizes[name] == len(data) for name, data in local.items()), sizes
    assert info.card_data.pipeline_tag == "image-segmentation" and info.pipeline_tag == "image-segmentation"
    assert info.library_name == "faceformers" and "faceformers" in info.tags, (info.library_name, info.tags)
    assert info.private is True

    tree = {entry.path: entry for entry in api.list_repo_tree("org/toy", recursive=True)}
    assert set(tree) == {".gitattributes", "sub", "sub/dir", *local}, sorted(tree)
    weights = local["model.safetensors"]
    assert tree["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert tree["config.json"].lfs is None
    git_sha1 = hashlib.sha1(b"blob %d\\0" % len(local["config.json"]) + local["config.json"]).hexdigest()
    assert tree["config.json"].blob_id == git_sha1
    assert [e.path for e in api.list_repo_tree("org/toy", path_in_repo="sub")] == ["sub/dir"]
    expanded = {e.path: e for e in api.list_repo_tree("org/toy", expand=True)}
    assert expanded["config.json"].last_commit.oid == commit.oid != expanded[".gitattributes"].last_commit.oid
    try:
        list(api.list_repo_tree("org/toy", path_in_repo="no-such-dir"))
        raise AssertionError("tree of a missing directory")
    except EntryNotFoundError:
        pass
    paths_info = {e.path: type(e).__name__ for e in api.get_paths_info("org/toy", ["config.json", "sub", "nope"])}
    assert paths_info == {"config.json": "RepoFile", "sub": "RepoFolder"}, paths_info

    assert Path(hf_hub_download("org/toy", "model.safetensors")).read_bytes() == weights
    assert Path(hf_hub_download("org/toy", "sub/dir/notes.txt")).read_bytes() == local["sub/dir/notes.txt"]
    for call, error in [
        (lambda: hf_hub_download("org/toy", "missing.json"), EntryNotFoundError),
        (lambda: hf_hub_download("org/toy", "config.json", revision="no-such-branch"), RevisionNotFoundError),
        (lambda: hf_hub_download("org/missing", "config.json"), RepositoryNotFoundError),
        (lambda: api.model_info("org/missing"), RepositoryNotFoundError),
    ]:
        try:
            call()
            raise AssertionError(f"no {error.__name__}")
        except error:
            pass

    api.create_branch("org/toy", branch="v2")
    api.upload_file(path_or_fileobj=b'{"hidden_size": 8}', path_in_repo="config.json", repo_id="org/toy",
                    revision="v2", commit_message="Bigger")
    refs = {ref.name: ref.target_commit for ref in api.list_repo_refs("org/toy").branches}
    assert set(refs) == {"main", "v2"} and refs["main"] == commit.oid != refs["v2"], refs
    main_config = json.loads(Path(hf_hub_download("org/toy", "config.json")).read_text())
    v2_config = json.loads(Path(hf_hub_download("org/toy", "config.json", revision="v2")).read_text())
    assert (main_config["hidden_size"], v2_config["hidden_size"]) == (4, 8), (main_config, v2_config)
    by_commit = json.loads(Path(hf_hub_download("org/toy", "config.json", revision=refs["v2"])).read_text())
    assert by_commit == v2_config

    snapshot = Path(snapshot_download("org/toy", cache_dir=fresh_cache))
    downloaded = {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
    assert {k: v for k, v in downloaded.items() if k != ".gitattributes"} == local, sorted(downloaded)

    api.delete_file("sub/dir/notes.txt", repo_id="org/toy", commit_message="Remove notes")
    remaining = sorted(api.list_repo_files("org/toy"))
    assert remaining == [".gitattributes", "README.md", "config.json", "model.safetensors"], remaining
    print(json.dumps(refs))
"""


def test_hub_api_round_trip(hub, hub_env, tmp_path):
    from safetensors.numpy import save_file

    folder = tmp_path / "toy"
    (folder / "sub" / "dir").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 4}))
    save_file({"weight": np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)},
              str(folder / "model.safetensors"))
    (folder / "README.md").write_text(README)
    (folder / "sub" / "dir" / "notes.txt").write_text("nested\n")

    refs = json.loads(run_client(HUB_API_SCRIPT, hub_env, folder, tmp_path / "fresh_cache").splitlines()[-1])

    assert hub.repo_private("org/toy")
    assert hub.branches("org/toy") == refs | {"main": hub.branches("org/toy")["main"]}
    assert hub.list_files("org/toy") == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    assert "sub/dir/notes.txt" in hub.list_files("org/toy", revision="v2")  # branched before the deletion
    token_headers = {auth for _, path, auth in hub.requests if path.startswith("/api/models/org/toy")}
    assert "Bearer hf_emulator_token" in token_headers, token_headers
    lfs_uploads = [path for method, path, _ in hub.requests if method == "PUT" and path.startswith("/lfs-upload/")]
    assert lfs_uploads, "model.safetensors should go through the LFS batch API"


TRANSFORMERS_SCRIPT = """
    import sys
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    fresh_cache = sys.argv[1]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    model = BertModel(config).eval()
    inputs = torch.tensor([[2, 5, 7, 3]])
    with torch.no_grad():
        expected_main = model(inputs).last_hidden_state
    model.push_to_hub("org/tiny-bert")
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[5] += 1.0
        expected_v2 = model(inputs).last_hidden_state
    model.push_to_hub("org/tiny-bert", revision="v2")
    assert not torch.equal(expected_main, expected_v2)

    for revision, expected in [("main", expected_main), ("v2", expected_v2)]:
        loaded = AutoModel.from_pretrained("org/tiny-bert", revision=revision, cache_dir=fresh_cache).eval()
        assert type(loaded).__name__ == "BertModel"
        with torch.no_grad():
            torch.testing.assert_close(loaded(inputs).last_hidden_state, expected, rtol=0, atol=0)
"""


def test_transformers_push_and_load(hub, hub_env, tmp_path):
    run_client(TRANSFORMERS_SCRIPT, hub_env, tmp_path / "fresh_cache")

    branches = hub.branches("org/tiny-bert")
    assert set(branches) == {"main", "v2"} and branches["main"] != branches["v2"]
    for revision in branches:
        assert {"config.json", "model.safetensors", "README.md"} <= set(hub.list_files("org/tiny-bert", revision))


PUSH_DATASET_SCRIPT = """
    import sys
    from pathlib import Path
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    paths = sorted(Path(sys.argv[1]).glob("*.png"))
    labels = [int(p.stem.split("-")[1]) for p in paths]
    images = [PILImage.open(p).convert("RGB") for p in paths]
    features = Features({"image": Image(), "label": Value("int64")})
    Dataset.from_dict({"image": images, "label": labels}, features=features).push_to_hub("org/toy-faces")
"""

LOAD_DATASET_SCRIPT = """
    import sys
    from pathlib import Path
    import numpy as np
    from datasets import load_dataset
    from PIL import Image as PILImage

    paths = sorted(Path(sys.argv[1]).glob("*.png"))
    rows = list(load_dataset("org/toy-faces", split="train", streaming=True))
    assert len(rows) == len(paths) == 8, len(rows)
    for row, path in zip(rows, paths):
        assert row["label"] == int(path.stem.split("-")[1])
        expected = np.asarray(PILImage.open(path).convert("RGB"))
        np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), expected)
"""


def test_datasets_push_and_stream(hub, hub_env, tmp_path):
    from faceformers.data.synthetic import SyntheticFaces

    faces = SyntheticFaces(seed=0, image_size=32, num_identities=3)
    image_dir = tmp_path / "faces"
    image_dir.mkdir()
    for index in range(8):
        sample = faces.sample(index)
        sample["image"].save(image_dir / f"{index:02d}-{sample['identity']}.png")

    run_client(PUSH_DATASET_SCRIPT, hub_env, image_dir)
    files = hub.list_files("org/toy-faces", repo_type="dataset")
    assert "README.md" in files and any(name.endswith(".parquet") for name in files), files

    run_client(LOAD_DATASET_SCRIPT, client_env(hub.url, tmp_path / "fresh_hf_home"), image_dir)


FAILING_COMMIT_SCRIPT = """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    api.create_repo("org/failing", exist_ok=True)
    try:
        api.upload_file(path_or_fileobj=b"payload", path_in_repo="data.txt", repo_id="org/failing")
        raise AssertionError("the commit should have failed")
    except HfHubHTTPError as error:
        assert error.response.status_code == 500 and "boom" in str(error), str(error)
"""


def test_fail_commits(hub, hub_env):
    hub.fail_commits = "boom"
    try:
        run_client(FAILING_COMMIT_SCRIPT, hub_env)
    finally:
        hub.fail_commits = None
    assert hub.list_files("org/failing") == [".gitattributes"]


def test_loopback_only(hub, tmp_path):
    assert hub.url.startswith("http://127.0.0.1:")
    with pytest.raises(ValueError, match="loopback"):
        HubEmulator(tmp_path / "other", host="0.0.0.0")


def _request(hub: HubEmulator, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = hub.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_protocol_details(hub):
    """Ranges, error headers and chunked LFS uploads, with a bare HTTP client (no subprocess)."""
    repo = hub.create_repo("org/protocol", "model", private=False)
    content = bytes(range(256)) * 4
    file_op = {"path": "data.txt", "content": base64.b64encode(content).decode(), "encoding": "base64"}
    commit_id = hub.commit(repo, "main", {"summary": "data"}, [("file", file_op)])

    url = "/org/protocol/resolve/main/data.txt"
    status, headers, body = _request(hub, "GET", url, headers={"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Range"]) == (206, content[10:20], f"bytes 10-19/{len(content)}")
    assert headers["X-Repo-Commit"] == commit_id and headers["ETag"].startswith('"')
    status, headers, body = _request(hub, "HEAD", f"/org/protocol/resolve/{commit_id}/data.txt")
    assert (status, body, int(headers["Content-Length"])) == (200, b"", len(content))
    for path, code in [
        ("/org/protocol/resolve/main/missing.txt", "EntryNotFound"),
        ("/org/protocol/resolve/nope/data.txt", "RevisionNotFound"),
        ("/org/missing/resolve/main/data.txt", "RepoNotFound"),
    ]:
        status, headers, body = _request(hub, "GET", path)
        assert (status, headers["X-Error-Code"]) == (404, code) and json.loads(body)["error"]

    body = json.dumps({"paths": ["data.txt", "missing.txt"]}).encode()
    status, _, body = _request(hub, "POST", "/api/models/org/protocol/paths-info/main", body=body,
                               headers={"Content-Type": "application/json"})
    assert status == 200 and [(e["path"], e["size"]) for e in json.loads(body)] == [("data.txt", len(content))]

    # A chunked LFS upload: the body is checked against its sha256 oid.
    def chunks(data):
        yield data[:100]
        yield data[100:]

    oid = hashlib.sha256(content).hexdigest()
    status, _, _ = _request(hub, "PUT", f"/lfs-upload/{'0' * 64}", body=chunks(content))
    assert status == 400
    status, _, _ = _request(hub, "PUT", f"/lfs-upload/{oid}", body=chunks(content))
    assert status == 200
    hub.commit(repo, "main", {"summary": "lfs"}, [("lfsFile", {"path": "blob.bin", "oid": oid, "size": len(content)})])
    status, headers, body = _request(hub, "GET", "/org/protocol/resolve/main/blob.bin")
    assert (status, body, headers["ETag"]) == (200, content, f'"{oid}"')
