"""LAFS stage 2 (Sun & Tzimiropoulos, CVPR 2024): DINO self-distillation on patches sampled around facial landmarks.

The building blocks shared by `examples/pretrain_lafs.py` and parity checks against the authors' `lafs_train.py`
(szlbiubiubiu/LAFS_CVPR2024):

* [`DINOHead`]: MLP (hidden 2048, GELU) -> 256-d bottleneck -> L2 normalisation -> weight-normalised linear layer
  without bias to `out_dim` prototypes (LAFS: 100,000). Parameter names follow the original (`mlp.{0,2,4}`,
  `last_layer.weight_g`, `last_layer.weight_v`), so its state dicts load unchanged.
* [`DINOLoss`]: cross-entropy between the centred, sharpened teacher distribution of each global view and the student
  distribution of every other view, with an EMA of the teacher outputs as the centre.
* [`sample_landmark_views`]: the LAFS landmark augmentations. Every view's landmarks (predicted by a frozen landmark
  CNN on the clean version of that view) are shifted by `N(0, sigma^2)` pixels (sigma 5); the global views keep all
  points in their natural order, each local view keeps `local_points` (36) points drawn uniformly **with replacement**
  (a random subset in random order, duplicates possible). Nothing is clamped: points may leave the image, and the
  patch sampler then reads zeros there, as the original does.
* [`LAFSMultiViewWrapper`]: backbone + head over a list of views; consecutive views with the same number of points
  share one backbone pass, as DINO's `MultiCropWrapper`.
* Schedules: [`cosine_schedule`] (DINO's `utils.cosine_scheduler`, per step), [`teacher_temperature`] (linear warm-up
  0.07 -> 0.04 in LAFS, then constant) and [`teacher_momentum`] (cosine 0.996 -> 1), and [`update_teacher`] (EMA).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


LAFS_OUT_DIM = 100_000
LAFS_NUM_GLOBAL_VIEWS = 2
LAFS_NUM_LOCAL_VIEWS = 8
LAFS_LOCAL_POINTS = 36
LAFS_LANDMARK_SIGMA = 5.0


# ---------------------------------------------------------------------------------------------------------------------
# Head
# ---------------------------------------------------------------------------------------------------------------------


class DINOWeightNormLinear(nn.Module):
    """`nn.utils.weight_norm(nn.Linear(in, out, bias=False))` with the same parameters: the weight is
    `weight_g * weight_v / ||weight_v||` row by row (`weight_g` `(out, 1)`, `weight_v` `(out, in)`)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        weight = torch.empty(out_features, in_features)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear's default, which weight_norm starts from
        self.weight_v = nn.Parameter(weight)
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))  # DINO fills g with 1

    @property
    def weight(self) -> torch.Tensor:
        return torch._weight_norm(self.weight_v, self.weight_g, 0)  # the op behind weight_norm, bit for bit

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_states, self.weight)


class DINOHead(nn.Module):
    """DINO projection head: `num_layers` Linear layers (GELU between, optional BatchNorm) to a `bottleneck_dim`
    vector, L2 normalisation, then a weight-normalised bias-free linear layer to `out_dim` logits.

    Args:
        in_dim: width of the backbone embedding (768 for Part fViT-B).
        out_dim: number of prototypes (LAFS `--out_dim` 100,000; DINO 65,536).
        use_bn: BatchNorm1d after the hidden Linears (LAFS / DINO default off).
        norm_last_layer: freeze the weight-norm gain at 1, i.e. unit-norm prototypes (LAFS default on).
        num_layers, hidden_dim, bottleneck_dim: 3, 2048 and 256 as in DINO / LAFS.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = LAFS_OUT_DIM,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        num_layers: int = 3,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
    ):
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim), ("bottleneck_dim", bottleneck_dim)):
            if value < 1:
                raise ValueError(f"DINOHead: `{name}` must be >= 1, got {value}.")
        num_layers = max(num_layers, 1)
        if num_layers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
            for _ in range(num_layers - 2):
                layers += [nn.BatchNorm1d(hidden_dim)] if use_bn else []
                layers += [nn.GELU(), nn.Linear(hidden_dim, hidden_dim)]
            layers += [nn.BatchNorm1d(hidden_dim)] if use_bn else []
            layers += [nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim)]
            self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = DINOWeightNormLinear(bottleneck_dim, out_dim)
        self.norm_last_layer = norm_last_layer
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad_(False)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`(N, in_dim)` -> `(N, out_dim)` logits."""
        hidden_states = F.normalize(self.mlp(embeddings), dim=-1, p=2)
        return self.last_layer(hidden_states)


# ---------------------------------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------------------------------


class DINOLoss(nn.Module):
    """DINO's loss over `num_views` student views of which the first `num_global_views` are also seen by the teacher.

    With teacher probabilities `q_i = softmax((t_i - c) / tau_t)` for global view `i` and student log-probabilities
    `log p_v = log_softmax(s_v / tau_s)`, the loss is the mean over all pairs `(i, v)` with `v != i` of
    `mean_batch(sum_k -q_i[k] log p_v[k])` (2 x 9 = 18 pairs in LAFS). The centre `c` then moves towards the batch
    mean of the teacher outputs: `c <- m c + (1 - m) mean(t)` (averaged over processes when `torch.distributed` is
    initialised).

    Outputs are view-major: `student_output` is `(num_views * B, out_dim)` (view 0's B rows first),
    `teacher_output` is `(num_global_views * B, out_dim)`. Computed in float32 whatever the input dtype.
    """

    def __init__(
        self,
        out_dim: int,
        num_views: int = LAFS_NUM_GLOBAL_VIEWS + LAFS_NUM_LOCAL_VIEWS,
        num_global_views: int = LAFS_NUM_GLOBAL_VIEWS,
        student_temperature: float = 0.1,
        center_momentum: float = 0.9,
    ):
        super().__init__()
        if not 1 <= num_global_views <= num_views or num_views < 2:
            raise ValueError(f"DINOLoss needs 1 <= num_global_views ({num_global_views}) <= num_views ({num_views}) and num_views >= 2.")
        if student_temperature <= 0 or not 0 <= center_momentum <= 1:
            raise ValueError(
                f"DINOLoss: student_temperature must be > 0 and center_momentum in [0, 1], got {student_temperature} "
                f"and {center_momentum}."
            )
        self.num_views, self.num_global_views = num_views, num_global_views
        self.student_temperature, self.center_momentum = student_temperature, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self,
        student_output: torch.Tensor,
        teacher_output: torch.Tensor,
        teacher_temperature: float,
        update_center: bool = True,
    ) -> torch.Tensor:
        batch_size = student_output.shape[0] // self.num_views
        if student_output.shape[0] % self.num_views or teacher_output.shape[0] != batch_size * self.num_global_views:
            raise ValueError(
                f"DINOLoss: expected student outputs (num_views * B = {self.num_views} * B, K) and teacher outputs "
                f"({self.num_global_views} * B, K), got {tuple(student_output.shape)} and {tuple(teacher_output.shape)}."
            )
        student_log_probs = F.log_softmax(student_output.float() / self.student_temperature, dim=-1).chunk(self.num_views)
        teacher_output = teacher_output.detach().float()
        teacher_probs = F.softmax((teacher_output - self.center) / teacher_temperature, dim=-1).chunk(self.num_global_views)
        total, terms = 0.0, 0
        for teacher_view, probs in enumerate(teacher_probs):
            for student_view, log_probs in enumerate(student_log_probs):
                if student_view == teacher_view:  # the same view seen by both networks is skipped
                    continue
                total = total + torch.sum(-probs * log_probs, dim=-1).mean()
                terms += 1
        loss = total / terms
        if update_center:
            self.update_center(teacher_output)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        batch_center = teacher_output.float().sum(dim=0, keepdim=True)
        count = teacher_output.shape[0]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            count *= dist.get_world_size()
        batch_center = batch_center / count
        self.center.copy_(self.center * self.center_momentum + batch_center * (1 - self.center_momentum))


# ---------------------------------------------------------------------------------------------------------------------
# Landmark views
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class LandmarkViews:
    """The landmarks of every view and the random draws that made them.

    Attributes:
        landmarks: one tensor per view, globals first: `(B, N, 2)` for a global view, `(B, local_points, 2)` for a
            local view, in pixels `(x, y)`.
        noise: `(num_views, B, N, 2)` the perturbation added to every view's landmarks (before the local draw).
        local_indices: `(num_local, B, local_points)` the landmark ids each local view keeps.
    """

    landmarks: list[torch.Tensor]
    noise: torch.Tensor
    local_indices: torch.Tensor


def sample_landmark_views(
    landmarks: torch.Tensor,
    num_global: int = LAFS_NUM_GLOBAL_VIEWS,
    num_local: int = LAFS_NUM_LOCAL_VIEWS,
    local_points: int = LAFS_LOCAL_POINTS,
    sigma: float = LAFS_LANDMARK_SIGMA,
    generator: torch.Generator | None = None,
) -> LandmarkViews:
    """The LAFS landmark augmentations (`lafs_train.py::train_one_epoch` with
    `face_landmark_4simmin_glo_loc.forward(Random_prob=True, ...)`).

    Every view's points get `sigma * N(0, 1)` pixels of noise (globals too); global views keep all `N` points in their
    order; local view `l` keeps `local_points` points `perturbed[b, idx[l, b]]` with `idx ~ U{0, ..., N - 1}` drawn
    with replacement. No clamping.

    The draws follow the original order and shapes, so a generator seeded like the original's global CPU RNG gives the
    very same numbers: `randn(B, N, 2)` per global view, then `randn(num_local * B, N, 2)` and
    `randint(0, N, (num_local * B, local_points))` for the local views together (view-major rows).

    Args:
        landmarks: `(B, N, 2)` (the same points for every view) or `(num_global + num_local, B, N, 2)` (each view's
            own points, e.g. predicted on its own crop; globals first).
        generator: the source of the draws (drawn on its device, then moved to the landmarks' device).
    """
    num_views = num_global + num_local
    if num_global < 1 or num_local < 0 or local_points < 1 or sigma < 0:
        raise ValueError(
            f"sample_landmark_views: need num_global >= 1, num_local >= 0, local_points >= 1 and sigma >= 0, got "
            f"{num_global}, {num_local}, {local_points} and {sigma}."
        )
    if landmarks.ndim == 3:
        landmarks = landmarks.unsqueeze(0).expand(num_views, -1, -1, -1)
    if landmarks.ndim != 4 or landmarks.shape[0] != num_views or landmarks.shape[-1] != 2:
        raise ValueError(f"Expected landmarks (B, N, 2) or ({num_views}, B, N, 2), got {tuple(landmarks.shape)}.")
    _, batch_size, num_points, _ = landmarks.shape
    device = generator.device if generator is not None else torch.device("cpu")

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * sigma

    noise = [normal(batch_size, num_points, 2) for _ in range(num_global)]
    local_indices = torch.empty(0, batch_size, local_points, dtype=torch.long)
    if num_local:
        noise.append(normal(num_local * batch_size, num_points, 2))
        local_indices = torch.randint(0, num_points, (num_local * batch_size, local_points), generator=generator, device=device)
        local_indices = local_indices.view(num_local, batch_size, local_points)
    noise = torch.cat(noise).view(num_views, batch_size, num_points, 2).to(landmarks.device)
    local_indices = local_indices.to(landmarks.device)

    perturbed = landmarks + noise.to(landmarks.dtype)
    views = [perturbed[view] for view in range(num_global)]
    for view in range(num_local):
        index = local_indices[view].unsqueeze(-1).expand(-1, -1, 2)
        views.append(torch.gather(perturbed[num_global + view], 1, index))
    return LandmarkViews(landmarks=views, noise=noise, local_indices=local_indices)


# ---------------------------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------------------------


class LAFSMultiViewWrapper(nn.Module):
    """A Part fViT backbone (its landmark CNN unused: the points are given) and a [`DINOHead`] over several views.

    `forward(pixel_values, landmarks)` takes one `(B_v, C, H, W)` image and one `(B_v, n_v, 2)` point set per view and
    returns the head outputs of all views concatenated in view order `(sum_v B_v, out_dim)`. Consecutive views with
    the same `n_v` go through the backbone together (one pass for the globals, one for the locals), like DINO's
    `MultiCropWrapper`; the head runs once on everything.
    """

    def __init__(self, backbone: nn.Module, head: DINOHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def embed(self, pixel_values: Sequence[torch.Tensor], landmarks: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(pixel_values) != len(landmarks) or not pixel_values:
            raise ValueError(f"Expected one landmark set per view, got {len(pixel_values)} views and {len(landmarks)} landmark sets.")
        embeddings, start = [], 0
        while start < len(landmarks):
            end = start + 1
            while end < len(landmarks) and landmarks[end].shape[1] == landmarks[start].shape[1]:
                end += 1
            images, points = torch.cat(list(pixel_values[start:end])), torch.cat(list(landmarks[start:end]))
            output = self.backbone(images, landmarks=points, return_dict=True)
            embeddings.append(output.embeddings)
            start = end
        return torch.cat(embeddings)

    def forward(self, pixel_values: Sequence[torch.Tensor], landmarks: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(self.embed(pixel_values, landmarks))


def make_teacher(student: nn.Module) -> nn.Module:
    """A copy of the student with gradients off (LAFS / DINO start the teacher from the student's weights)."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """EMA `teacher <- m * teacher + (1 - m) * student` over the parameters the student trains (the frozen ones, such
    as the landmark CNN or a frozen weight-norm gain, are equal in both and stay as they are). Pass unwrapped modules
    (not DDP) with the same parameter names."""
    student_parameters = dict(student.named_parameters())
    pairs = [(param, student_parameters[name]) for name, param in teacher.named_parameters() if student_parameters[name].requires_grad]
    if not pairs:
        return
    teacher_tensors = [t for t, _ in pairs]
    student_tensors = [s.detach().to(t.dtype) for t, s in pairs]
    torch._foreach_mul_(teacher_tensors, momentum)
    torch._foreach_add_(teacher_tensors, torch._foreach_mul(student_tensors, 1 - momentum))


# ---------------------------------------------------------------------------------------------------------------------
# Schedules (per step; DINO / LAFS define them per iteration over epochs)
# ---------------------------------------------------------------------------------------------------------------------


def cosine_schedule(
    step: int, total_steps: int, base_value: float, final_value: float, warmup_steps: int = 0, warmup_start_value: float = 0.0
) -> float:
    """Value at `step` of DINO's `utils.cosine_scheduler`: `np.linspace(warmup_start_value, base_value, warmup_steps)`
    (end point included), then `final + (base - final) * (1 + cos(pi * i / (total_steps - warmup_steps))) / 2` for
    `i = step - warmup_steps`. Steps past the end keep the last value."""
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"cosine_schedule: need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got {total_steps} and "
            f"{warmup_steps}."
        )
    step = min(max(step, 0), total_steps - 1)
    if step < warmup_steps:
        if warmup_steps == 1:
            return warmup_start_value
        return warmup_start_value + (base_value - warmup_start_value) * step / (warmup_steps - 1)
    index, length = step - warmup_steps, total_steps - warmup_steps
    return final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * index / length))


def teacher_temperature(step: int, warmup_temperature: float = 0.07, temperature: float = 0.04, warmup_steps: int = 0) -> float:
    """`np.linspace(warmup_temperature, temperature, warmup_steps)` then `temperature` (DINOLoss's schedule; LAFS goes
    from 0.07 down to 0.04 over 30 of its 41 epochs)."""
    if step >= warmup_steps:
        return temperature
    if warmup_steps == 1:
        return warmup_temperature
    return warmup_temperature + (temperature - warmup_temperature) * step / (warmup_steps - 1)


def teacher_momentum(step: int, total_steps: int, base_momentum: float = 0.996) -> float:
    """EMA momentum of the teacher: cosine from `base_momentum` at step 0 towards 1 (`cosine_scheduler(0.996, 1)`)."""
    return cosine_schedule(step, total_steps, base_momentum, 1.0)


__all__ = [
    "DINOHead",
    "DINOLoss",
    "DINOWeightNormLinear",
    "LAFSMultiViewWrapper",
    "LAFS_LANDMARK_SIGMA",
    "LAFS_LOCAL_POINTS",
    "LAFS_NUM_GLOBAL_VIEWS",
    "LAFS_NUM_LOCAL_VIEWS",
    "LAFS_OUT_DIM",
    "LandmarkViews",
    "cosine_schedule",
    "make_teacher",
    "sample_landmark_views",
    "teacher_momentum",
    "teacher_temperature",
    "update_teacher",
]
