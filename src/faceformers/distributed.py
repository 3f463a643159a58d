"""torch.distributed helpers shared by the models' losses."""

from __future__ import annotations

import torch


def gather_across_processes(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate `tensor` from every process (no gradient); returns it with this process's row offset.

    Without an initialised process group of more than one process, returns `tensor` itself and offset 0.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor, 0
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return tensor, 0
    gathered = [torch.empty_like(tensor) for _ in range(world_size)]
    torch.distributed.all_gather(gathered, tensor.detach().contiguous())
    return torch.cat(gathered, dim=0), tensor.shape[0] * torch.distributed.get_rank()


def gather_with_gradient(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Like `gather_across_processes`, but differentiable: the gradient that any process computes for a row flows
    back to the process that owns it (summed over processes). Returns the gathered rows and this process's offset."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor, 0
    if torch.distributed.get_world_size() == 1:
        return tensor, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0), tensor.shape[0] * torch.distributed.get_rank()
