import math

import pytest
import torch

from faceformers.training import OptimizationArguments, build_optimizer


def schedule(**kwargs) -> list[float]:
    args = OptimizationArguments(output_dir="unused", max_steps=10, warmup_steps=4, **kwargs)
    optimizer, scheduler = build_optimizer(torch.nn.Linear(2, 2), args, lr=1e-3)
    values = []
    for _ in range(args.max_steps + 1):
        values.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return values


def test_warmup_then_cosine_between_the_configured_learning_rates():
    default = schedule()
    assert default[0] == 0 and default[2] == pytest.approx(5e-4) and default[4] == pytest.approx(1e-3)
    assert default[7] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 3 / 6))) and default[10] == pytest.approx(0)
    farl = schedule(warmup_start_learning_rate=1e-6, min_learning_rate=9e-4)  # FaRL: 1e-6 -> 1e-3, cosine to 9e-4
    assert farl[0] == pytest.approx(1e-6) and farl[4] == pytest.approx(1e-3) and farl[10] == pytest.approx(9e-4)
    assert all(a >= b for a, b in zip(farl[4:], farl[5:]))


def test_negative_schedule_bounds_are_rejected():
    with pytest.raises(ValueError, match=r"--min_learning_rate \(-1.0\) must be >= 0"):
        OptimizationArguments(output_dir="unused", warmup_start_learning_rate=0.0, min_learning_rate=-1.0)
