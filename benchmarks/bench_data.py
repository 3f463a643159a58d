"""Throughput of the MCF pre-training data pipeline: images/s and images/s per core.

What is timed is exactly what `examples/pretrain_mcf.py` runs on the data side: `FaceStream` over WebDataset shards,
`MCFPretrainingTransform` (JPEG decode -> RGB -> bilinear resize -> random horizontal flip -> normalise, plus the two
masking noises) and the `Batcher` that stacks samples into batches, built by `faceformers.training.build_batcher`
(the same DataLoader: `batch_size=None`, `prefetch_factor=4 * batch_size`). Two settings, each at two output sizes:

* inline: one process, one torch thread, no DataLoader worker (`--dataloader_num_workers 0`);
* workers: a DataLoader with `--workers` worker processes (default 2) feeding the main process.

Per setting the report gives images/s (wall clock), images/s per core (images/s divided by the cores the setting
can use: 1 inline, min(workers, cores) with workers) and images per CPU-second (images divided by the CPU time that the
main process and its workers actually used, read from /proc: the least sensitive to other load on the machine), and
the minor page faults per image of those processes (large buffers that the allocator gives back to the OS and faults
in again).
Settings are interleaved: every repetition runs all of them, the order reversed on every other repetition.

A stage profile (`--profile_images`, one thread, best of `--profile_repeats`) then times each step of the transform on
its own: what the time of one image goes to.

`--what_if` also times prototypes that are NOT what training runs today, at the first size, to size two changes:
`worker batches` (each DataLoader worker stacks `--chunk` of its samples before sending them, instead of one sample per
message) and `uint8` (the transform stops before the float conversion and normalisation, which would move to the
accelerator; `uint8 native` also leaves out the resize, shipping the 128 px images).

Usage:

    python benchmarks/bench_data.py                          # the real shards, 224 and 128 px, inline + 2 workers
    python benchmarks/bench_data.py --json /tmp/data.json    # also write every timing as JSON
    python benchmarks/bench_data.py --what_if                # also the prototypes (worker batches, uint8 output)
    python benchmarks/bench_data.py --synthetic              # generated JPEG shards (no real data needed)
    python benchmarks/bench_data.py --tiny                   # tiny generated shards, a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import io
import itertools
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import PIL
import PIL.Image
import torch
from torch.utils.data import DataLoader, IterableDataset

from faceformers import MCFImageProcessor
from faceformers.data.streaming import SKIP, FaceStream, Record, Shard, decode_image, read_shard, resolve_train_files
from faceformers.data.transforms import MCFPretrainingTransform, sample_rng
from faceformers.training import DataArguments, build_batcher


ROOT = Path(__file__).resolve().parents[1]
# The real shards live next to the repository (research-only licence: read in place, never copied).
DEFAULT_TRAIN_FILES = os.path.normpath(ROOT / ".." / "shared" / "realdata" / "celebahq128_pretrain" / "train-*.tar")
TARGET_PER_CORE = 1000.0  # img/s per core at 224 px (the target)


@dataclass(frozen=True)
class Setting:
    """What one run times. `output`: float (the training transform), uint8 or uint8 native (prototypes); `transport`:
    inline (no worker), samples (training's DataLoader: one sample per message) or batches (prototype)."""

    output: str
    transport: str
    image_size: int
    workers: int

    @property
    def label(self) -> str:
        transport = {"inline": "inline (1 process, 1 thread)", "samples": f"DataLoader, {self.workers} workers",
                     "batches": f"DataLoader, {self.workers} workers, worker batches"}[self.transport]
        return transport if self.output == "float" else f"{self.output} output, {transport}"

    @property
    def cores(self) -> int:
        """Cores this setting can use, the denominator of 'per core'."""
        return 1 if self.transport == "inline" else min(self.workers, available_cores())


@dataclass
class Measurement:
    """One timed run: `images` images after `warmup_batches` untimed batches."""

    images: int
    seconds: float
    cpu_seconds: float
    minor_faults: int  # page faults of the main process and its workers during the run
    load_before: float
    load_after: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    @property
    def per_cpu_second(self) -> float:
        return self.images / max(self.cpu_seconds, 1e-9)

    @property
    def faults_per_image(self) -> float:
        return self.minor_faults / self.images


@dataclass
class Summary:
    """All repetitions of one setting; medians are reported."""

    setting: Setting
    runs: list[Measurement] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(run, name) for run in self.runs)

    @property
    def per_core(self) -> float:
        return self.median("images_per_second") / self.setting.cores

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.setting), "label": self.setting.label, "cores": self.setting.cores,
            "images_per_second": self.median("images_per_second"), "images_per_second_per_core": self.per_core,
            "images_per_cpu_second": self.median("per_cpu_second"),
            "minor_faults_per_image": self.median("faults_per_image"),
            "runs": [{**asdict(run), "images_per_second": run.images_per_second,
                      "images_per_cpu_second": run.per_cpu_second} for run in self.runs],
        }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--train_files", nargs="+", default=[DEFAULT_TRAIN_FILES],
        help="glob patterns of WebDataset shards (default: ../shared/realdata/celebahq128_pretrain/train-*.tar)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128], help="output sizes (default: 224 128)")
    parser.add_argument("--patch_size", type=int, default=16, help="patch size of the masking noises (default: 16)")
    parser.add_argument("--num_images", type=int, default=4096, help="timed images per run (default: 4096)")
    parser.add_argument("--batch_size", type=int, default=64, help="Batcher batch size (default: 64)")
    parser.add_argument("--warmup_batches", type=int, default=2, help="untimed batches per run (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting, interleaved (default: 3)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default: 2)")
    parser.add_argument(
        "--shuffle_buffer", type=int, default=1000, help="per-shard shuffle buffer, as in training (default: 1000)"
    )
    parser.add_argument(
        "--profile_images", type=int, default=500, help="images of the per-stage profile, 0 to skip (default: 500)"
    )
    parser.add_argument("--profile_repeats", type=int, default=5, help="stage profile: best of N (default: 5)")
    parser.add_argument("--what_if", action="store_true", help="also time the prototypes (worker batches, uint8)")
    parser.add_argument("--chunk", type=int, default=32, help="samples per worker message of 'worker batches' (32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--synthetic", action="store_true", help="generate 16 JPEG shards of 128 px noise images in a temp dir"
    )
    parser.add_argument("--tiny", action="store_true", help="2 tiny generated shards, small sizes (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the metadata and every timing to this file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.synthetic = True
        defaults = {"sizes": [64, 32], "num_images": 32, "batch_size": 8, "warmup_batches": 1, "repeats": 1,
                    "profile_images": 16, "profile_repeats": 1, "shuffle_buffer": 4, "chunk": 4}
        for name, value in defaults.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    if min(args.num_images, args.batch_size, args.repeats, args.workers, args.chunk, args.profile_repeats) < 1:
        parser.error("--num_images, --batch_size, --repeats, --workers, --chunk and --profile_repeats must be >= 1")
    if args.warmup_batches < 0 or args.profile_images < 0:
        parser.error("--warmup_batches and --profile_images must be >= 0")
    return args


# ---------------------------------------------------------------------------------------------------- tiny shards


def write_shards(root: Path, num_shards: int, per_shard: int, image_size: int, seed: int = 0) -> list[Path]:
    """WebDataset shards of smooth random RGB images (`<key>.jpg`, JPEG quality 85, + `<key>.json`)."""
    rng = np.random.default_rng(seed)
    paths = []
    for shard in range(num_shards):
        path = root / f"train-{shard:06d}.tar"
        with tarfile.open(path, "w") as archive:
            for index in range(per_shard):
                key = f"{shard:03d}{index:05d}"
                coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                image = PIL.Image.fromarray(coarse).resize((image_size, image_size), PIL.Image.BICUBIC)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=85)
                members = ((f"{key}.jpg", buffer.getvalue()), (f"{key}.json", json.dumps({"id": key}).encode()))
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------------- prototypes


class UInt8Transform(MCFPretrainingTransform):
    """Prototype: the training transform up to the float conversion. Returns contiguous `uint8` pixels `(3, H, W)`;
    the float conversion and normalisation would run on the accelerator. With `resize=False` the image keeps its
    stored size (the accelerator would resize too)."""

    def __init__(self, *args, resize: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.resize = resize

    def __call__(self, record: Record) -> dict[str, torch.Tensor]:
        rng = sample_rng(self.seed, record)
        image = decode_image(record)
        if self.resize and image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), PIL.Image.BILINEAR)
        if self.horizontal_flip and rng.random() < 0.5:
            image = image.transpose(PIL.Image.FLIP_LEFT_RIGHT)
        return {
            "pixel_values": torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous(),
            "noise": torch.from_numpy(rng.random(self.num_patches, dtype=np.float32)),
            "momentum_noise": torch.from_numpy(rng.random(self.num_patches, dtype=np.float32)),
        }


class WorkerBatches(IterableDataset):
    """Prototype: each worker stacks `chunk` consecutive samples of its own positions into one message. (Skip markers
    are dropped here; a real version would send their count and let the Batcher restore the global order.)"""

    def __init__(self, stream: FaceStream, chunk: int):
        super().__init__()
        self.stream, self.chunk = stream, chunk

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        samples = iter(self.stream)
        while True:
            kept = [sample for sample in itertools.islice(samples, self.chunk) if SKIP not in sample]
            if kept:
                yield {key: torch.stack([sample[key] for sample in kept]) for key in kept[0]}


class ChunkBatcher:
    """Concatenates worker messages into batches of (at least) `batch_size` samples."""

    def __init__(self, loader: DataLoader, batch_size: int):
        self.loader, self.batch_size, self._iterator = loader, batch_size, None

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self._iterator is None:
            self._iterator = iter(self.loader)
        parts, count = [], 0
        while count < self.batch_size:
            parts.append(next(self._iterator))
            count += len(parts[-1]["pixel_values"])
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


# ------------------------------------------------------------------------------------------------------ measuring


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def process_usage(pid: int | str) -> tuple[float, int]:
    """(utime + stime in seconds, minor page faults) of a process, all its threads, from /proc; zeros without it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def worker_pids(batcher) -> list[int]:
    iterator = getattr(batcher, "_iterator", None)
    return [worker.pid for worker in getattr(iterator, "_workers", [])]


def usage(batcher) -> tuple[float, int]:
    """CPU seconds and minor page faults of this process and the batcher's DataLoader workers."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = time.process_time()
    for pid in worker_pids(batcher):
        worker_seconds, worker_faults = process_usage(pid)
        seconds, faults = seconds + worker_seconds, faults + worker_faults
    return seconds, faults


def make_transform(setting: Setting, args: argparse.Namespace) -> MCFPretrainingTransform:
    """The transform of `examples/pretrain_mcf.py`, built the same way (from the image processor's mean/std)."""
    size = setting.image_size
    processor = MCFImageProcessor(size={"height": size, "width": size})
    if setting.output == "float":
        return MCFPretrainingTransform.from_image_processor(processor, args.patch_size, seed=args.seed)
    return UInt8Transform(
        size, args.patch_size, processor.image_mean, processor.image_std, seed=args.seed,
        resize=setting.output != "uint8 native",
    )


def make_batcher(shards: list[Shard], setting: Setting, args: argparse.Namespace):
    transform = make_transform(setting, args)
    if setting.transport in ("inline", "samples"):  # exactly the training path
        workers = setting.workers if setting.transport == "samples" else 0
        data_args = DataArguments(shuffle_buffer_size=args.shuffle_buffer, dataloader_num_workers=workers)
        single_process = SimpleNamespace(process_index=0, num_processes=1)
        return build_batcher(shards, transform, single_process, data_args, args.batch_size, args.seed, position=0)
    stream = FaceStream(shards, transform, seed=args.seed, shuffle_buffer=args.shuffle_buffer)
    stream.check_workers(setting.workers)
    prefetch = max(2, 4 * args.batch_size // args.chunk)  # as many samples in flight as the training DataLoader
    loader = DataLoader(WorkerBatches(stream, args.chunk), batch_size=None, num_workers=setting.workers,
                        prefetch_factor=prefetch)
    return ChunkBatcher(loader, args.batch_size)


def measure(shards: list[Shard], setting: Setting, args: argparse.Namespace) -> Measurement:
    batcher = make_batcher(shards, setting, args)
    try:
        for _ in range(args.warmup_batches):
            batcher.next_batch()
        load_before = os.getloadavg()[0]
        (cpu_start, faults_start), start = usage(batcher), time.perf_counter()
        images = 0
        while images < args.num_images:
            images += len(batcher.next_batch()["pixel_values"])
        seconds = time.perf_counter() - start
        cpu_end, faults_end = usage(batcher)
        load_after = os.getloadavg()[0]
    finally:
        iterator = getattr(batcher, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
    return Measurement(images, seconds, cpu_end - cpu_start, faults_end - faults_start, load_before, load_after)


def settings_to_run(args: argparse.Namespace) -> list[Setting]:
    settings = [Setting("float", transport, size, args.workers if transport != "inline" else 0)
                for size in args.sizes for transport in ("inline", "samples")]
    if args.what_if:
        size = args.sizes[0]
        settings += [Setting("float", "batches", size, args.workers)]
        settings += [Setting(output, transport, size, args.workers if transport != "inline" else 0)
                     for output in ("uint8", "uint8 native") for transport in ("inline", "batches")]
    return settings


def run_settings(shards: list[Shard], args: argparse.Namespace) -> list[Summary]:
    settings = settings_to_run(args)
    summaries = {setting: Summary(setting) for setting in settings}
    for repeat in range(args.repeats):
        for setting in settings if repeat % 2 == 0 else reversed(settings):
            run = measure(shards, setting, args)
            summaries[setting].runs.append(run)
            print(
                f"  run {repeat + 1}/{args.repeats} {setting.label} {setting.image_size} px: "
                f"{run.images_per_second:.1f} img/s, {run.per_cpu_second:.1f} img/CPU-s, "
                f"{run.faults_per_image:.0f} faults/img (load {run.load_before:.2f} -> {run.load_after:.2f})",
                flush=True,
            )
    return list(summaries.values())


# ------------------------------------------------------------------------------------------------- stage profile


def best_per_item(function, items: list, repeats: int) -> tuple[float, list]:
    """Microseconds per item of `function` over `items`, best of `repeats` passes, and the outputs of the last."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = [function(item) for item in items]
        best = min(best, (time.perf_counter() - start) / len(items) * 1e6)
    return best, outputs


def stage_profile(shards: list[Shard], image_size: int, args: argparse.Namespace) -> dict[str, float]:
    """Microseconds per image of each transform step, each timed on its own over the same records (one thread).

    The `alt:` rows are not part of the pipeline: they time an alternative to the row above them.
    """
    transform = make_transform(Setting("float", "inline", image_size, 0), args)
    count, repeats = args.profile_images, args.profile_repeats
    stages: dict[str, float] = {}
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        records = list(itertools.islice(itertools.chain.from_iterable(read_shard(s) for s in shards), count))
        best = min(best, (time.perf_counter() - start) / len(records) * 1e6)
    stages["read tar records"] = best
    stages["per-sample RNG (default_rng)"], _ = best_per_item(lambda r: sample_rng(args.seed, r), records, repeats)
    stages["JPEG decode (PIL)"], decoded = best_per_item(decode_image, records, repeats)
    size = (image_size, image_size)
    stages[f"resize to {image_size} (PIL bilinear)"], resized = best_per_item(
        lambda im: im if im.size == size else im.resize(size, PIL.Image.BILINEAR), decoded, repeats
    )
    stages["horizontal flip (every image)"], _ = best_per_item(
        lambda im: im.transpose(PIL.Image.FLIP_LEFT_RIGHT), resized, repeats
    )
    stages["np.array (HWC uint8)"], arrays = best_per_item(np.array, resized, repeats)
    scale, shift = transform.scale, transform.shift
    stages["contiguous CHW + float + normalise (as in the transform)"], pixels = best_per_item(
        lambda a: torch.from_numpy(a).permute(2, 0, 1).contiguous().float().mul_(scale).sub_(shift), arrays, repeats
    )
    stages["alt: float + normalise of the permuted view (before 2c847f8)"], _ = best_per_item(
        lambda a: torch.from_numpy(a).permute(2, 0, 1).float().mul_(scale).sub_(shift), arrays, repeats
    )
    stages["alt: contiguous uint8 (no float, no normalise)"], uint8 = best_per_item(
        lambda a: torch.from_numpy(a).permute(2, 0, 1).contiguous(), arrays, repeats
    )
    rng = np.random.default_rng(args.seed)
    stages["two masking noises"], _ = best_per_item(
        lambda _: (torch.from_numpy(rng.random(transform.num_patches, dtype=np.float32)),
                   torch.from_numpy(rng.random(transform.num_patches, dtype=np.float32))),
        records, repeats,
    )
    batch = args.batch_size
    for name, tensors in (("Batcher torch.stack (float32)", pixels), ("alt: torch.stack of uint8 tensors", uint8)):
        groups = [tensors[i : i + batch] for i in range(0, len(tensors) - batch + 1, batch)] or [tensors]
        per_group, _ = best_per_item(torch.stack, groups, repeats)
        stages[name] = per_group / len(groups[0])
    stages["whole transform (one call per image)"], _ = best_per_item(transform, records, repeats)
    return stages


# -------------------------------------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_metadata(args: argparse.Namespace, argv: Sequence[str] | None, shards: list[Shard]) -> dict[str, Any]:
    from PIL import features

    return {
        "command": shlex.join(["python", "benchmarks/bench_data.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data": "synthetic" if args.synthetic else f"{len(shards)} shards: {args.train_files}",
        "cpu": cpu_model(),
        "cores": available_cores(),
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
        **{name: getattr(args, name) for name in ("sizes", "num_images", "batch_size", "warmup_batches", "repeats",
                                                   "workers", "shuffle_buffer", "patch_size", "chunk", "seed")},
    }


def format_report(metadata: dict[str, Any], summaries: list[Summary], profiles: dict[int, dict[str, float]]) -> str:
    lines = [
        f"`{metadata['command']}`",
        "",
        f"{metadata['date']} | {metadata['data']} | {metadata['cpu']}, {metadata['cores']} cores | torch "
        f"{metadata['torch']}, Pillow {metadata['pillow']} (libjpeg-turbo: {metadata['libjpeg_turbo']}) | "
        f"{metadata['num_images']} images x {metadata['repeats']} runs, batch {metadata['batch_size']}",
        "",
        "| setting | size | img/s | img/s per core | img per CPU-s | img/s min-max | page faults per img | load |",
        "|:---|---:|---:|---:|---:|---:|---:|:---|",
    ]
    for summary in summaries:
        rates = [run.images_per_second for run in summary.runs]
        loads = [run.load_before for run in summary.runs] + [run.load_after for run in summary.runs]
        lines.append(
            f"| {summary.setting.label} | {summary.setting.image_size} | {summary.median('images_per_second'):.0f} | "
            f"{summary.per_core:.0f} | {summary.median('per_cpu_second'):.0f} | {min(rates):.0f}-{max(rates):.0f} | "
            f"{summary.median('faults_per_image'):.0f} | {min(loads):.2f}-{max(loads):.2f} |"
        )
    at_224 = [s for s in summaries if s.setting.image_size == 224 and s.setting.output == "float"]
    if at_224:
        best = max(s.per_core for s in at_224)
        lines += ["", f"Target: >= {TARGET_PER_CORE:.0f} img/s per core at 224 px; best measured (training "
                      f"transform) {best:.0f} ({'met' if best >= TARGET_PER_CORE else 'NOT met'})."]
    for size, stages in profiles.items():
        lines += ["", f"Stage profile at {size} px (one thread, microseconds per image, best of "
                      f"{metadata['profile_repeats']}):", "", "| stage | us/img |", "|:---|---:|"]
        lines += [f"| {stage} | {value:.1f} |" for stage, value in stages.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(args, argv)
    finally:
        torch.set_num_threads(threads)  # callers (tests) keep their thread count


def run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as temporary:
        if args.synthetic:
            num_shards, per_shard, size = (2, 16, 48) if args.tiny else (16, 128, 128)
            write_shards(Path(temporary), num_shards, per_shard, size, seed=args.seed)
            patterns = [str(Path(temporary) / "train-*.tar")]
        else:
            patterns = args.train_files
            try:
                resolve_train_files(patterns)
            except ValueError:
                print(
                    f"bench_data: no shards match {patterns}; skipping. Pass --train_files, or --synthetic to run on "
                    "generated shards."
                )
                return None
        shards = resolve_train_files(patterns)
        metadata = collect_metadata(args, argv, shards)
        metadata["profile_repeats"] = args.profile_repeats
        print(f"bench_data: {len(shards)} shards, load average {os.getloadavg()[0]:.2f}", flush=True)
        summaries = run_settings(shards, args)
        profiles = {size: stage_profile(shards, size, args) for size in args.sizes} if args.profile_images else {}
    metadata["loadavg_end"] = os.getloadavg()
    print(format_report(metadata, summaries, profiles))
    payload = {
        "metadata": metadata,
        "results": [summary.to_dict() for summary in summaries],
        "stage_profile_us_per_image": {str(size): stages for size, stages in profiles.items()},
    }
    if args.json is not None:
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main()
