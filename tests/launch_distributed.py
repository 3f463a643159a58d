"""Run a script in N CPU processes that talk only over 127.0.0.1: the process group is initialised from a FileStore
(torchrun's TCP store would listen on every interface), then the script runs as `__main__` and Accelerate reuses the
group. Usage from tests: `launch(["examples/pretrain_mcf.py", ...], world_size=2)`."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path


ROOT = Path(__file__).parents[1]


def spawn(argv: list[str], world_size: int, log_dir: Path) -> list[subprocess.Popen]:
    """Start the ranks (not waiting); each rank's output goes to `log_dir/rank<r>.log`."""
    store = Path(tempfile.mkdtemp()) / "store"
    processes = []
    for rank in range(world_size):
        env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
        if world_size > 1:  # a single process gets no rank variables, or accelerate would open a TCP store
            env.update(
                RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
                MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", INIT_METHOD=f"file://{store}",
            )
        log = open(log_dir / f"rank{rank}.log", "w")
        command = [sys.executable, __file__, *argv] if world_size > 1 else [sys.executable, *argv]
        processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    return processes


def launch(argv: list[str], world_size: int, log_dir: Path, timeout: float = 600) -> None:
    processes = spawn(argv, world_size, log_dir)
    codes = [process.wait(timeout=timeout) for process in processes]
    if any(codes):
        logs = "\n".join((log_dir / f"rank{r}.log").read_text()[-3000:] for r in range(world_size))
        raise RuntimeError(f"ranks exited with {codes}:\n{logs}")


if __name__ == "__main__":
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=os.environ["INIT_METHOD"], rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"])
    )
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
