"""Build a Hugging Face hub cache entry by hand, so `from_pretrained("org/name")` resolves with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_to_offline_cache(hf_home: str | Path, repo_id: str, folder: str | Path, commit: str = "0" * 40) -> Path:
    """Copy every file of `folder` into `$HF_HOME/hub/models--org--name` in the layout huggingface_hub writes:
    content-addressed `blobs/`, a `snapshots/<commit>/` tree of relative symlinks and `refs/main`."""
    repo_dir = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(Path(folder).iterdir()):
        data = file.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / file.name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot
