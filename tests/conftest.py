import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.slow` tests only run with RUN_SLOW=1 (as in transformers)."""
    if os.environ.get("RUN_SLOW", "").lower() in ("1", "true", "yes"):
        return
    skip = pytest.mark.skip(reason="slow test: set RUN_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
