"""Golden outputs of seeded tiny models: they guard refactors, so a change means the numerics changed.
Regenerate a fixture with `UPDATE_GOLDEN=1` only on purpose."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def assert_matches_golden(path: Path, actual: dict[str, list[float]], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(actual, indent=1) + "\n")
    expected = json.loads(path.read_text())
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(torch.tensor(actual[key]), torch.tensor(expected[key]), rtol=rtol, atol=atol, msg=key)
