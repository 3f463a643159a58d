"""Make a saved checkpoint folder load with `trust_remote_code=True`, without faceformers installed.

`register_for_auto_class` + `save_pretrained` copy a class's module and its `from .x import` neighbours, but cannot
follow the package's `from ...compat import` imports. So the modules a checkpoint needs (its config, model, image
processor, processor and tokenizer classes, and every faceformers module they import) are written next to the weights
as one flat folder of files with `from .x import` imports, and the `auto_map` entries that
`register_for_auto_class` would write are added to the JSON files.
"""

from __future__ import annotations

import ast
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import transformers

import faceformers


logger = logging.getLogger(__name__)

# The Auto classes faceformers registers its models with (see `faceformers.auto`).
MODEL_AUTO_CLASSES = (
    "AutoModel",
    "AutoModelForPreTraining",
    "AutoModelForSemanticSegmentation",
    "AutoModelForZeroShotImageClassification",
    "AutoModelForImageClassification",
)
HEADER = "# Written by faceformers-publish from `{module}` (faceformers {version}); edit the package, not this copy.\n"


def _module_imports(module_name: str) -> list[tuple[int, int, str]]:
    """(line, absolute module) of each faceformers import in a module's source.

    Relative imports are resolved against the module's package; `from pkg import name` where `name` is a submodule
    counts as an import of that submodule."""
    source = Path(sys.modules[module_name].__file__).read_text()
    package = module_name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
        elif node.module and node.module.split(".")[0] == "faceformers":
            target = node.module
        else:
            continue
        if node.module is None or target == "faceformers":
            raise ValueError(f"{module_name}:{node.lineno}: import the module itself, not `from {target} import ...`")
        found.append((node.lineno, target))
    return found


def collect_modules(roots: list[str]) -> list[str]:
    """The faceformers modules `roots` need, transitively, in a stable order."""
    seen: list[str] = []
    pending = list(roots)
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        importlib.import_module(name)
        seen.append(name)
        pending += [target for _, target in _module_imports(name)]
    return seen


def flat_name(module_name: str) -> str:
    return module_name.rpartition(".")[2]


def _rewrite_imports(module_name: str) -> str:
    """The module's source with each faceformers import turned into `from .<flat name> import`."""
    lines = Path(sys.modules[module_name].__file__).read_text().splitlines(keepends=True)
    for lineno, target in _module_imports(module_name):
        line = lines[lineno - 1]
        start = line.index("from ")
        end = line.index(" import", start)
        lines[lineno - 1] = f"{line[:start]}from .{flat_name(target)}{line[end:]}"
    return "".join(lines)


def write_modules(modules: list[str], folder: Path) -> list[str]:
    names = [flat_name(module) for module in modules]
    clashes = {name for name in names if names.count(name) > 1}
    if clashes or "__init__" in names:
        raise ValueError(f"Cannot flatten modules {modules}: the file names {sorted(clashes)} would clash.")
    for module in modules:
        header = HEADER.format(module=module, version=faceformers.__version__)
        (folder / f"{flat_name(module)}.py").write_text(header + _rewrite_imports(module))
    return [f"{name}.py" for name in names]


def _class_ref(cls: type) -> str:
    return f"{flat_name(cls.__module__)}.{cls.__name__}"


def _faceformers_class(name: str) -> type:
    cls = getattr(faceformers, name, None)
    if cls is None:
        raise ValueError(f"{name!r} is not a faceformers class; remote code is only written for faceformers models.")
    return cls


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def add_remote_code(folder: str | Path) -> list[str]:
    """Write the code files and `auto_map` entries into a saved faceformers folder. Returns the code files written."""
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    config_class = type(transformers.AutoConfig.for_model(config["model_type"]))
    model_classes = [_faceformers_class(name) for name in config.get("architectures") or []]
    if not model_classes:
        raise ValueError(f"{folder / 'config.json'} has no `architectures`: save the folder with `save_pretrained`.")
    classes: list[type] = [config_class, *model_classes]
    config["auto_map"] = {"AutoConfig": _class_ref(config_class)}
    for auto_name in MODEL_AUTO_CLASSES:  # every Auto class the package registered this model with
        mapping = getattr(transformers, auto_name)._model_mapping
        if config_class in mapping and mapping[config_class] in model_classes:
            config["auto_map"][auto_name] = _class_ref(mapping[config_class])
    _write_json(folder / "config.json", config)

    if (path := folder / "preprocessor_config.json").is_file():
        image_processor = _read_json(path)
        classes.append(_faceformers_class(image_processor["image_processor_type"]))
        image_processor["auto_map"] = {"AutoImageProcessor": _class_ref(classes[-1])}
        _write_json(path, image_processor)
    if (path := folder / "processor_config.json").is_file():  # a processor embeds its image processor's settings
        processor = _read_json(path)
        classes.append(_faceformers_class(processor["processor_class"]))
        processor["auto_map"] = {"AutoProcessor": _class_ref(classes[-1])}
        classes.append(_faceformers_class(processor["image_processor"]["image_processor_type"]))
        processor["image_processor"]["auto_map"] = {"AutoImageProcessor": _class_ref(classes[-1])}
        _write_json(path, processor)
    if (path := folder / "tokenizer_config.json").is_file():
        tokenizer = _read_json(path)
        classes.append(_faceformers_class(tokenizer["tokenizer_class"]))
        tokenizer["auto_map"] = {"AutoTokenizer": [_class_ref(classes[-1]), None]}  # [slow, fast]
        _write_json(path, tokenizer)

    files = write_modules(collect_modules(list(dict.fromkeys(cls.__module__ for cls in classes))), folder)
    logger.info("Wrote %d code files and auto_map %s to %s", len(files), config["auto_map"], folder)
    return files
