import importlib.util
import sys
from pathlib import Path
from types import ModuleType


ROOT = Path(__file__).parents[1]


def load_script(relative_path: str) -> ModuleType:
    """Import a script of the repository (examples/, benchmarks/) as a module, so a test can call its `main(argv)`."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script executes
    spec.loader.exec_module(module)
    return module
