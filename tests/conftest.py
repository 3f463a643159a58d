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


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """A loopback Hugging Face Hub emulator (tests/hub_emulator.py), shared by the whole session."""
    from .hub_emulator import HubEmulator

    emulator = HubEmulator(tmp_path_factory.mktemp("hub"))
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def hub_env(hub, tmp_path):
    """Environment for a client subprocess talking to `hub`, with a fresh HF_HOME for each test."""
    from .hub_emulator import client_env

    return client_env(hub.url, tmp_path / "hf_home")
