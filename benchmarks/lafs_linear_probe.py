"""Linear probe of LAFS pre-training: frozen embeddings of a tiny LAFS-pretrained Part fViT against a random init.

Three stages on synthetic faces (`faceformers.data.synthetic.SyntheticFaces`; a population is a seed, and two seeds are
unrelated people), all through the repository's own scripts:

1. **Stage 1 (landmark CNN).** `examples/train_face_recognition.py` trains a tiny `PartFViTForFaceRecognition` with
   identity labels on population `--stage1_seed` (its periodic verification uses population `stage1_seed + 1000`).
   Only its landmark CNN is used further on, as LAFS does.
2. **Stage 2 (LAFS).** `examples/pretrain_lafs.py --landmark_model_name_or_path <stage 1>` pre-trains a fresh ViT of
   the same config (landmark-based DINO, no labels) on population `--lafs_seed`; the saved teacher (a
   `PartFViTModel`: EMA ViT + the frozen stage-1 landmark CNN) is the model probed.
   The LAFS arguments are scaled to the tiny model (`LAFS_ARGS`): 1024 prototypes, 4 local views of 9 points,
   landmark noise 1.4 px (LAFS's 5 px at 112 px, times 32 / 112), BatchNorm in the head's MLP and teacher momentum
   0.99 for a run of a few hundred steps, lr 1e-3 (the script's rule would give 6e-5 at batch 32).
3. **Linear probe.** A held-apart population (`--probe_seed`, `--probe_identities` people, `--probe_images` images
   each, drawn at the model's resolution) is embedded by every frozen model in eval mode (`embeddings`, the
   LayerNorm-ed CLS token, no flip). For each identity the first `--probe_train_images` images train a multinomial
   logistic regression (torch, full batch L-BFGS, L2 `--probe_l2`, features standardised with the training
   statistics); the other images of the same people are the test set. A hyperparameter-free nearest class mean
   classifier (cosine to the mean training embedding of each identity) and the mean cosine between the embeddings of
   different faces (near 1: every face looks alike to the model) are reported next to it.

Models probed (all of the same config):

- `lafs_teacher`: the LAFS teacher (stage-1 landmark CNN, LAFS-pretrained ViT).
- `random_init/<seed>`: a randomly initialised `PartFViTModel` (random landmark CNN and ViT), once per
  `--random_seeds`; its score depends a lot on the seed, hence several and their mean.
- `random_vit_stage1_landmarks/<seed>`: the same random ViT on the stage-1 landmark CNN's points: the control that
  differs from `lafs_teacher` only by the ViT's pre-training.
- `lafs_student`: the LAFS student (the teacher's EMA source), for reference.
- `stage1_supervised`: the stage-1 backbone itself (supervised, on *other* people), for reference.

Usage (a script, not run in CI; with the defaults about 2.5 minutes (3.2 CPU-minutes) on 2 idle cores):

    .venv/bin/python benchmarks/lafs_linear_probe.py --output_dir /tmp/lafs_probe
    .venv/bin/python benchmarks/lafs_linear_probe.py --output_dir /tmp/lafs_probe --tiny   # smoke test, seconds

`main(argv)` returns a dict with the settings, the stage results, the per-model probe accuracies and the timings; it is
also written to `output_dir/results.json`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from faceformers import PartFViTConfig, PartFViTImageProcessor, PartFViTModel
from faceformers.data.recognition import FaceRecognitionTransform
from faceformers.data.streaming import Record
from faceformers.data.synthetic import SyntheticFaces


ROOT = Path(__file__).resolve().parents[1]
# 79k parameters (backbone): a 2-block ViT (width 64) over 25 landmark patches of 6 px on 32 px faces and a 2-block
# landmark CNN, as in tests/examples/test_face_recognition_learnability.py; no dropout / drop-path (the tiny model
# underfits). CLS token and position embeddings drawn with std 0.02 instead of the original 1.0: with 1.0 they swamp
# the 6 px patches of this model, its embeddings of different faces have cosine 0.999 at initialisation, and the DINO
# loss stays at log(out_dim) (uniform collapse); with 0.02 the cosine is 0.68-0.81 (seeds 0-4).
TINY_CONFIG = (
    "hidden_size=64,num_hidden_layers=2,num_attention_heads=4,head_dim=16,intermediate_size=128,image_size=32,"
    "patch_size=6,num_patches=25,landmark_stem_channels=8,"
    'landmark_block_config=[[3,16,16,true,"relu",2],[3,32,24,false,"relu",2]],'
    "hidden_dropout_prob=0.0,embedding_dropout_prob=0.0,drop_path_rate=0.0,landmark_dropout_prob=0.0,"
    "initializer_range=0.02"
)
# A head and views scaled to the tiny model: 1024 prototypes, 4 local views of 9 points; BatchNorm in the head's MLP
# and teacher momentum 0.99 for a run of a few hundred steps; landmark noise 5 px x 32 / 112 (LAFS's 5 px at 112 px).
LAFS_ARGS = (
    "--out_dim 1024 --head_hidden_dim 256 --head_bottleneck_dim 64 --num_local_views 4 --local_points 9 "
    "--use_bn_in_head true --momentum_teacher 0.99 --landmark_noise_std 1.4"
)
logger = logging.getLogger("lafs_linear_probe")


def load_script(relative_path: str):
    """Import `examples/<script>.py` as a module (the scripts are not a package)."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script executes
    spec.loader.exec_module(module)
    return module


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add = parser.add_argument
    add("--output_dir", type=Path, required=True, help="Where the stage-1 and LAFS runs and results.json go.")
    add("--config_overrides", default=TINY_CONFIG, help="PartFViTConfig of stage 1 (so of LAFS and the baselines).")
    add("--threads", type=int, default=2, help="torch threads.")
    add("--random_seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="Weight-init seeds of the random baselines.")
    # stage 1
    add("--stage1_steps", type=int, default=300)
    add("--stage1_batch_size", type=int, default=64)
    add("--stage1_learning_rate", type=float, default=4e-3)
    add("--stage1_identities", type=int, default=100)
    add("--stage1_seed", type=int, default=1, help="Population (and run seed) of stage 1.")
    # LAFS
    add("--lafs_steps", type=int, default=600)
    add("--lafs_batch_size", type=int, default=32)
    add("--lafs_learning_rate", type=float, default=1e-3, help="0: the script's rule, 5e-4 * batch / 256.")
    add("--lafs_seed", type=int, default=2, help="Population (and run seed) of the LAFS pre-training.")
    add("--lafs_args", default=LAFS_ARGS, help="Further pretrain_lafs.py arguments (DINO head, views, teacher).")
    # probe
    add("--probe_seed", type=int, default=3, help="Population of the probe (held apart from stages 1 and 2).")
    add("--probe_identities", type=int, default=50)
    add("--probe_images", type=int, default=20, help="Images per identity.")
    add("--probe_train_images", type=int, default=10, help="Images per identity that train the probe.")
    add("--probe_l2", type=float, default=1e-3, help="L2 penalty of the logistic regression (on the mean loss).")
    add("--probe_iterations", type=int, default=300, help="L-BFGS iterations.")
    add("--tiny", action="store_true", help="A few steps of everything (smoke test).")
    args = parser.parse_args(argv)
    if args.tiny:
        args.stage1_steps = args.lafs_steps = 4
        args.probe_identities, args.probe_images, args.probe_train_images, args.probe_iterations = 8, 6, 3, 20
    if not 0 < args.probe_train_images < args.probe_images:
        parser.error("--probe_train_images must be in [1, --probe_images).")
    return args


# ------------------------------------------------------------------------------------------------------------ stages


def train_stage1(args: argparse.Namespace) -> dict:
    argv = [
        "--output_dir", str(args.output_dir / "stage1"), "--config_overrides", args.config_overrides,
        "--seed", str(args.stage1_seed), "--max_steps", str(args.stage1_steps),
        "--per_device_train_batch_size", str(args.stage1_batch_size), "--gradient_accumulation_steps", "1",
        "--learning_rate", str(args.stage1_learning_rate), "--synthetic_num_identities", str(args.stage1_identities),
        "--logging_steps", "50",
    ]  # fmt: skip
    return load_script("examples/train_face_recognition.py").main(argv)


def pretrain_lafs(args: argparse.Namespace) -> dict:
    argv = [
        "--output_dir", str(args.output_dir / "lafs"), "--landmark_model_name_or_path", str(args.output_dir / "stage1"),
        "--seed", str(args.lafs_seed), "--max_steps", str(args.lafs_steps),
        "--per_device_train_batch_size", str(args.lafs_batch_size), "--logging_steps", "50", *args.lafs_args.split(),
    ]  # fmt: skip
    if args.lafs_learning_rate:
        argv += ["--learning_rate", str(args.lafs_learning_rate)]
    return load_script("examples/pretrain_lafs.py").main(argv)


def probe_models(args: argparse.Namespace) -> dict[str, PartFViTModel]:
    """The frozen models to probe, in eval mode (see the module docstring); the random baselines once per seed."""
    teacher = PartFViTModel.from_pretrained(args.output_dir / "lafs")
    student = PartFViTModel.from_pretrained(args.output_dir / "lafs" / "pretraining" / "student")
    stage1 = PartFViTModel.from_pretrained(args.output_dir / "stage1")  # the recognition model's backbone
    config = PartFViTConfig.from_dict(teacher.config.to_dict())
    models = {"lafs_teacher": teacher, "lafs_student": student, "stage1_supervised": stage1}
    for seed in args.random_seeds:
        torch.manual_seed(seed)
        models[f"random_init/{seed}"] = PartFViTModel(config)
    for seed in args.random_seeds:
        torch.manual_seed(seed)
        random_vit = PartFViTModel(config)  # the ViT of random_init/<seed> ...
        random_vit.landmark_net.load_state_dict(stage1.landmark_net.state_dict())  # ... on the stage-1 points
        models[f"random_vit_stage1_landmarks/{seed}"] = random_vit
    return {name: model.eval() for name, model in models.items()}


def summarise(probes: dict[str, dict]) -> dict[str, dict]:
    """Mean, min and max of every score over the seeds of each random baseline."""
    groups: dict[str, list[dict]] = {}
    for name, scores in probes.items():
        if "/" in name:
            groups.setdefault(name.split("/")[0], []).append(scores)
    return {
        f"{group}/mean": {key: sum(s[key] for s in runs) / len(runs) for key in ("test_accuracy", "train_accuracy", "ncm_accuracy", "mean_cosine")}
        | {"min_test_accuracy": min(s["test_accuracy"] for s in runs), "max_test_accuracy": max(s["test_accuracy"] for s in runs)}
        for group, runs in groups.items()
    }


# ------------------------------------------------------------------------------------------------------------- probe


def probe_faces(args: argparse.Namespace, processor: PartFViTImageProcessor) -> tuple[torch.Tensor, ...]:
    """(pixel values, identities, is-training mask) of the held-apart population: sample `i` shows person
    `i % probe_identities`, so the first `probe_identities * probe_train_images` samples hold the first
    `probe_train_images` images of every person."""
    size = processor.size["height"]
    faces = SyntheticFaces(seed=args.probe_seed, image_size=max(size, 32), num_identities=args.probe_identities)
    transform = FaceRecognitionTransform.from_image_processor(processor, horizontal_flip=False)  # as the evaluation
    count = args.probe_identities * args.probe_images
    samples = [transform(Record(f"synthetic/{index}", {"index": index, "faces": faces})) for index in range(count)]
    pixels = torch.stack([s["pixel_values"] for s in samples])
    labels = torch.stack([s["labels"] for s in samples])
    train = torch.arange(count) < args.probe_identities * args.probe_train_images
    return pixels, labels, train


@torch.no_grad()
def embed(model: PartFViTModel, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([model(pixels[i : i + batch_size]).embeddings.float() for i in range(0, len(pixels), batch_size)])


def logistic_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, iterations: int) -> torch.nn.Linear:
    """Multinomial logistic regression from zero weights: mean cross-entropy + `l2 * |W|^2`, full batch L-BFGS."""
    classifier = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(classifier.weight)
    torch.nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.LBFGS(classifier.parameters(), lr=1.0, max_iter=iterations, history_size=20,
                                  tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(x), y) + l2 * classifier.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return classifier


@torch.no_grad()
def linear_probe(embeddings: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, args: argparse.Namespace) -> dict:
    """Logistic regression on standardised embeddings (statistics of the training images), nearest class mean
    (cosine, embeddings centred with the training mean), and the mean cosine between embeddings of different faces
    (close to 1: every face gets nearly the same embedding)."""
    train_x, test_x, train_y, test_y = embeddings[train], embeddings[~train], labels[train], labels[~train]
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    classifier = logistic_regression((train_x - mean) / std, train_y, args.probe_identities, args.probe_l2, args.probe_iterations)
    train_accuracy = (classifier((train_x - mean) / std).argmax(1) == train_y).float().mean().item()
    test_accuracy = (classifier((test_x - mean) / std).argmax(1) == test_y).float().mean().item()
    centred_train, centred_test = F.normalize(train_x - mean), F.normalize(test_x - mean)
    class_means = F.normalize(torch.stack([centred_train[train_y == c].mean(0) for c in range(args.probe_identities)]))
    ncm_accuracy = ((centred_test @ class_means.T).argmax(1) == test_y).float().mean().item()
    unit = F.normalize(embeddings)
    cosines = unit @ unit.T
    mean_cosine = ((cosines.sum() - cosines.diagonal().sum()) / (len(unit) * (len(unit) - 1))).item()
    return {"test_accuracy": test_accuracy, "train_accuracy": train_accuracy, "ncm_accuracy": ncm_accuracy,
            "mean_cosine": mean_cosine, "num_train": int(train.sum()), "num_test": int((~train).sum())}  # fmt: skip


# -------------------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    timings, start = {}, time.perf_counter()

    stage1 = train_stage1(args)
    timings["stage1_s"] = time.perf_counter() - start
    lafs = pretrain_lafs(args)
    timings["lafs_s"] = time.perf_counter() - start - timings["stage1_s"]

    probe_start = time.perf_counter()
    models = probe_models(args)
    pixels, labels, train = probe_faces(args, PartFViTImageProcessor.from_pretrained(args.output_dir / "lafs"))
    probes = {}
    for name, model in models.items():
        probes[name] = scores = linear_probe(embed(model, pixels), labels, train, args)
        logger.info("%-28s probe test accuracy %.4f (train %.4f), nearest class mean %.4f, mean cosine %.3f", name,
                    scores["test_accuracy"], scores["train_accuracy"], scores["ncm_accuracy"], scores["mean_cosine"])  # fmt: skip
    summaries = summarise(probes)
    timings["probe_s"] = time.perf_counter() - probe_start
    timings["total_s"] = time.perf_counter() - start

    lafs_losses = [h["loss"] for h in json.loads((args.output_dir / "lafs" / "metrics.json").read_text())["loss_history"]]
    parameters = sum(p.numel() for p in models["lafs_teacher"].parameters())
    result = {
        "command": " ".join(["benchmarks/lafs_linear_probe.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "parameters": parameters,
        "stage1": stage1,
        "lafs": {**lafs, "min_loss": min(lafs_losses)},
        "probe": probes,
        "probe_random_baselines": summaries,
        "chance": 1 / args.probe_identities,
        "timings": timings,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
    }
    (args.output_dir / "results.json").write_text(json.dumps(result, indent=1))
    print(f"\n{parameters:,} backbone parameters; stage 1: {args.stage1_steps} steps, held-apart verification accuracy "
          f"{stage1['eval_accuracy']:.4f}; LAFS: {args.lafs_steps} steps, loss {lafs['first_loss']:.3f} -> "
          f"{lafs['last_loss']:.3f} (min {min(lafs_losses):.3f})\n")  # fmt: skip
    print(f"Linear probe on {args.probe_identities} held-apart identities ({args.probe_train_images} train / "
          f"{args.probe_images - args.probe_train_images} test images each; chance {1 / args.probe_identities:.3f}):\n")  # fmt: skip
    print("| model | probe test acc. | probe train acc. | nearest class mean acc. | mean cosine |")
    print("|:---|---:|---:|---:|---:|")
    for name, scores in {**probes, **summaries}.items():
        spread = f" ({scores['min_test_accuracy']:.3f}-{scores['max_test_accuracy']:.3f})" if "min_test_accuracy" in scores else ""
        print(f"| {name} | {scores['test_accuracy']:.3f}{spread} | {scores['train_accuracy']:.3f} | "
              f"{scores['ncm_accuracy']:.3f} | {scores['mean_cosine']:.3f} |")  # fmt: skip
    print("\n" + "  ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return result


if __name__ == "__main__":
    main()
