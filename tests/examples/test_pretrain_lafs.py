"""`examples/pretrain_lafs.py` and `faceformers.models.part_fvit.lafs`: two steps in-process on synthetic faces (the
saved teacher loads with `PartFViTModel` and `AutoModel`), exact resume, a stage-1 landmark CNN carried into the
teacher, the landmark views (shapes, determinism, sigma, the original draw order), the DINO loss checked by hand, the
head, the schedules, no gradient into the teacher, the view transform and arguments that must fail at start."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from faceformers import PartFViTConfig, PartFViTForFaceRecognition, PartFViTModel
from faceformers.data.streaming import Record
from faceformers.data.synthetic import SyntheticFaces
from faceformers.models.part_fvit.lafs import (
    DINOHead,
    DINOLoss,
    cosine_schedule,
    sample_landmark_views,
    teacher_momentum,
    teacher_temperature,
    update_teacher,
)

from ..script_utils import load_script


TINY = (
    "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,head_dim=16,intermediate_size=64,image_size=32,"
    'patch_size=4,num_patches=16,landmark_stem_channels=8,landmark_block_config=[[3,16,8,true,"relu",2]]'
)
TINY_LAFS = ["--out_dim", "64", "--head_hidden_dim", "32", "--head_bottleneck_dim", "16", "--num_local_views", "2", "--local_points", "4"]


def arguments(output_dir, *extra):
    return [
        "--output_dir", str(output_dir), "--config_overrides", TINY, "--random_landmark_net", *TINY_LAFS,
        "--per_device_train_batch_size", "2", "--logging_steps", "1", "--synthetic_num_samples", "16", *extra,
    ]  # fmt: skip


def script():
    return load_script("examples/pretrain_lafs.py")


def test_two_steps_on_synthetic_faces_then_exact_resume(tmp_path):
    result = script().main(arguments(tmp_path / "full", "--max_steps", "2", "--checkpointing_steps", "1"))
    assert result["steps"] == 2 and math.isfinite(result["first_loss"]) and math.isfinite(result["last_loss"])
    full = tmp_path / "full"
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "metrics.json",
                 "pretraining/student/model.safetensors", "pretraining/dino_heads.safetensors"):  # fmt: skip
        assert (full / name).exists(), name
    history = json.loads((full / "metrics.json").read_text())["loss_history"]
    assert len(history) == 2 and [h["teacher_temperature"] for h in history] == pytest.approx([0.07, 0.04])  # 1 warm-up step
    assert history[0]["teacher_momentum"] == pytest.approx(0.996) and history[1]["teacher_momentum"] == pytest.approx(0.998)

    # the teacher: a PartFViTModel folder ready for train_face_recognition.py --model_name_or_path
    teacher = PartFViTModel.from_pretrained(full).eval()
    auto = AutoModel.from_pretrained(full).eval()
    assert type(auto) is PartFViTModel and teacher.config.architectures == ["PartFViTModel"]
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(auto(pixels).embeddings, teacher(pixels).embeddings)
    assert teacher(pixels).embeddings.shape == (2, 32)
    student = load_file(str(full / "pretraining" / "student" / "model.safetensors"))
    saved = load_file(str(full / "model.safetensors"))
    for name, tensor in saved.items():  # the (frozen) landmark CNN is the student's; the ViT moved by EMA only
        if name.startswith("landmark_net."):
            assert torch.equal(tensor, student[name]), name
    assert not torch.equal(saved["layers.0.mlp.fc1.weight"], student["layers.0.mlp.fc1.weight"])
    heads = load_file(str(full / "pretraining" / "dino_heads.safetensors"))
    assert heads["center"].shape == (1, 64) and heads["center"].abs().sum() > 0
    assert torch.all(heads["teacher_head.last_layer.weight_g"] == 1)  # norm_last_layer: the gain stays 1

    resumed = script().main(
        arguments(tmp_path / "resumed", "--max_steps", "2", "--resume_from_checkpoint", str(full / "checkpoints" / "step_00000001"))
    )
    assert resumed["steps"] == 2
    assert resumed["last_loss"] == pytest.approx(result["last_loss"], rel=1e-5)
    resumed_teacher = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    for name, tensor in saved.items():
        torch.testing.assert_close(resumed_teacher[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_stage1_landmark_cnn_goes_into_the_teacher_which_fine_tunes(tmp_path):
    module = script()
    config = module.apply_config_overrides(PartFViTConfig(num_labels=5, use_reference_landmarks=True), TINY)
    torch.manual_seed(123)
    stage1 = PartFViTForFaceRecognition(config)  # a supervised stage-1 folder, margin head and all
    stage1.save_pretrained(tmp_path / "stage1")
    result = module.main(
        ["--output_dir", str(tmp_path / "lafs"), "--landmark_model_name_or_path", str(tmp_path / "stage1"), *TINY_LAFS,
         "--config_overrides", "num_hidden_layers=2", "--per_device_train_batch_size", "2", "--synthetic_num_samples", "8",
         "--max_steps", "1", "--teacher_train_mode", "false", "--photometric_augmentation", "false"]  # fmt: skip
    )
    assert result["steps"] == 1
    teacher = PartFViTModel.from_pretrained(tmp_path / "lafs")
    assert teacher.config.num_hidden_layers == 2 and teacher.config.num_labels == 2 and not teacher.config.use_reference_landmarks
    for name, tensor in stage1.part_fvit.landmark_net.state_dict().items():
        assert torch.equal(teacher.landmark_net.state_dict()[name], tensor), name

    # stage 3: train_face_recognition.py --model_name_or_path <LAFS output> (new margin head)
    tuned = load_script("examples/train_face_recognition.py").main(
        ["--output_dir", str(tmp_path / "tuned"), "--model_name_or_path", str(tmp_path / "lafs"), "--num_labels", "8",
         "--max_steps", "1", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
         "--synthetic_num_samples", "16", "--synthetic_num_identities", "8", "--eval_num_samples", "16",
         "--eval_num_identities", "4", "--mixup_alpha", "0"]  # fmt: skip
    )
    assert tuned["num_labels"] == 8 and math.isfinite(tuned["last_loss"])
    recognition = PartFViTForFaceRecognition.from_pretrained(tmp_path / "tuned")
    assert recognition.margin_head.weight.shape == (8, 32) and recognition.config.num_hidden_layers == 2


def test_landmark_views_shapes_determinism_and_sigma():
    landmarks = torch.rand(3, 196, 2) * 111
    views = sample_landmark_views(landmarks, generator=torch.Generator().manual_seed(0))
    assert len(views.landmarks) == 10
    assert all(v.shape == (3, 196, 2) for v in views.landmarks[:2]) and all(v.shape == (3, 36, 2) for v in views.landmarks[2:])
    assert views.noise.shape == (10, 3, 196, 2) and views.local_indices.shape == (8, 3, 36)
    again = sample_landmark_views(landmarks, generator=torch.Generator().manual_seed(0))
    other = sample_landmark_views(landmarks, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(views.landmarks, again.landmarks))
    assert not torch.equal(views.landmarks[0], other.landmarks[0])

    # globals: every point shifted, natural order; locals: the perturbed points of the drawn ids (with replacement)
    assert torch.equal(views.landmarks[0], landmarks + views.noise[0])
    for local in range(8):
        expected = torch.stack([(landmarks + views.noise[2 + local])[b, views.local_indices[local, b]] for b in range(3)])
        assert torch.equal(views.landmarks[2 + local], expected)
    assert views.noise.std().item() == pytest.approx(5.0, rel=0.03) and abs(views.noise.mean().item()) < 0.1
    exact = sample_landmark_views(landmarks, sigma=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(exact.landmarks[1], landmarks)
    assert torch.equal(exact.local_indices, views.local_indices)  # the draws do not depend on sigma
    many = sample_landmark_views(torch.rand(64, 196, 2), generator=torch.Generator().manual_seed(2))
    assert any(len(set(ids.tolist())) < 36 for ids in many.local_indices.flatten(0, 1))  # duplicates occur
    outside = sample_landmark_views(torch.zeros(1, 196, 2), generator=torch.Generator().manual_seed(0))
    assert outside.landmarks[0].min() < 0  # no clamping to the image

    # the original's draw order on the global CPU RNG: randn per global view, then randn + randint for the locals
    torch.manual_seed(7)
    noise = [torch.randn(3, 196, 2) * 5, torch.randn(3, 196, 2) * 5, torch.randn(8 * 3, 196, 2) * 5]
    ids = torch.randint(0, 196, (8 * 3, 36, 1))
    views = sample_landmark_views(landmarks, generator=torch.Generator().manual_seed(7))
    assert torch.equal(views.noise.flatten(0, 1), torch.cat(noise))
    assert torch.equal(views.local_indices.flatten(0, 1), ids[..., 0])

    per_view = torch.rand(4, 2, 16, 2) * 31  # each view's own points
    views = sample_landmark_views(per_view, num_local=2, local_points=5, generator=torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views.landmarks] == [(2, 16, 2), (2, 16, 2), (2, 5, 2), (2, 5, 2)]
    assert torch.equal(views.landmarks[1], per_view[1] + views.noise[1])
    with pytest.raises(ValueError, match=r"Expected landmarks \(B, N, 2\) or \(4, B, N, 2\)"):
        sample_landmark_views(torch.rand(3, 2, 16, 2), num_local=2)


def cross_entropy(teacher_logits, student_logits, teacher_temperature, student_temperature):
    """By hand: -sum_k softmax(t / tau_t)_k * log softmax(s / tau_s)_k."""
    q = [math.exp(t / teacher_temperature) for t in teacher_logits]
    q = [x / sum(q) for x in q]
    log_norm = math.log(sum(math.exp(s / student_temperature) for s in student_logits))
    return -sum(qk * (s / student_temperature - log_norm) for qk, s in zip(q, student_logits))


def test_dino_loss_by_hand():
    student = [[0.2, -0.1, 0.05], [-0.3, 0.4, 0.1]]  # 2 views x batch 1 x 3 prototypes
    teacher = [[0.1, 0.0, -0.2], [0.3, -0.1, 0.2]]
    loss_fn = DINOLoss(3, num_views=2, num_global_views=2, student_temperature=0.1, center_momentum=0.9)
    loss = loss_fn(torch.tensor(student), torch.tensor(teacher), teacher_temperature=0.05)
    expected = (cross_entropy(teacher[0], student[1], 0.05, 0.1) + cross_entropy(teacher[1], student[0], 0.05, 0.1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    center = [0.1 * (a + b) / 2 for a, b in zip(teacher[0], teacher[1])]  # 0.9 * 0 + 0.1 * mean
    torch.testing.assert_close(loss_fn.center, torch.tensor([center]))

    # second call: the teacher is centred first; 3 views (2 global), same-view pairs skipped -> 4 terms
    student3 = [[0.2, -0.1, 0.05], [-0.3, 0.4, 0.1], [0.0, 0.1, -0.1]]
    loss = DINOLoss(3, num_views=3, num_global_views=2)(torch.tensor(student3), torch.tensor(teacher), 0.04)
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]
    expected = sum(cross_entropy(teacher[i], student3[v], 0.04, 0.1) for i, v in pairs) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    centred = [t - c for t, c in zip(teacher[0], center)]
    loss = loss_fn(torch.tensor(student), torch.tensor(teacher), teacher_temperature=0.05, update_center=False)
    expected = (cross_entropy(centred, student[1], 0.05, 0.1) + cross_entropy([t - c for t, c in zip(teacher[1], center)], student[0], 0.05, 0.1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="expected student outputs"):
        loss_fn(torch.zeros(3, 3), torch.zeros(2, 3), 0.04)


def test_dino_head_matches_the_original_layout():
    head = DINOHead(8, out_dim=20, hidden_dim=16, bottleneck_dim=4)
    assert sorted(head.state_dict()) == ["last_layer.weight_g", "last_layer.weight_v", "mlp.0.bias", "mlp.0.weight",
                                         "mlp.2.bias", "mlp.2.weight", "mlp.4.bias", "mlp.4.weight"]  # fmt: skip
    assert not head.last_layer.weight_g.requires_grad and head.last_layer.weight_v.requires_grad
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(20))  # unit prototypes
    x = torch.randn(5, 8)
    bottleneck = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    torch.testing.assert_close(head(x), bottleneck @ torch.nn.functional.normalize(head.last_layer.weight_v, dim=1).T)
    assert DINOHead(8, 20, norm_last_layer=False).last_layer.weight_g.requires_grad
    assert isinstance(DINOHead(8, 20, use_bn=True, hidden_dim=16).mlp[1], torch.nn.BatchNorm1d)


def test_schedules_follow_dino():
    def dino_cosine_scheduler(base, final, total, warmup=0, start=0.0):  # DINO's utils.cosine_scheduler
        warm = np.linspace(start, base, warmup) if warmup else np.array([])
        iters = np.arange(total - warmup)
        return np.concatenate((warm, final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))))

    for total, warmup in ((10, 0), (10, 3), (7, 1)):
        reference = dino_cosine_scheduler(5e-4, 1e-6, total, warmup)
        assert [cosine_schedule(s, total, 5e-4, 1e-6, warmup) for s in range(total)] == pytest.approx(reference.tolist(), rel=1e-12)
    momentum = [teacher_momentum(s, 100) for s in range(100)]
    assert momentum[0] == pytest.approx(0.996) and momentum == sorted(momentum) and momentum[-1] == pytest.approx(1.0, abs=1e-6)
    reference = np.concatenate((np.linspace(0.07, 0.04, 30), np.ones(11) * 0.04))  # DINOLoss.teacher_temp_schedule
    assert [teacher_temperature(s, 0.07, 0.04, 30) for s in range(41)] == pytest.approx(reference.tolist())


def test_teacher_gets_no_gradient_and_follows_the_student_by_ema():
    module = script()
    model_args = module.ModelArguments(random_landmark_net=True, config_overrides=TINY)
    lafs_args = module.LAFSArguments(out_dim=16, head_hidden_dim=8, head_bottleneck_dim=4, num_local_views=2, local_points=4)
    torch.manual_seed(0)
    student, teacher, landmark_net = module.build_networks(model_args, lafs_args)
    dino_loss = module.DINOLoss(16, lafs_args.num_views)
    batch = {"clean_pixel_values": torch.randn(3, 4, 3, 32, 32), "pixel_values": torch.randn(3, 4, 3, 32, 32)}
    loss = module.lafs_loss(student, teacher, landmark_net, dino_loss, batch, torch.Generator().manual_seed(0), lafs_args, 0.04)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in landmark_net.parameters()) and all(p.grad is None for p in student.backbone.landmark_net.parameters())
    assert student.head.last_layer.weight_v.grad is not None and student.backbone.embeddings.patch_projection.weight.grad is not None

    with torch.no_grad():
        for p in student.parameters():
            if p.requires_grad:
                p.add_(1.0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    update_teacher(student, teacher, 0.75)
    after, current = teacher.state_dict(), student.state_dict()
    torch.testing.assert_close(after["head.mlp.0.weight"], 0.75 * before["head.mlp.0.weight"] + 0.25 * current["head.mlp.0.weight"])
    assert torch.equal(after["backbone.landmark_net.head.weight"], before["backbone.landmark_net.head.weight"])
    assert torch.equal(after["head.last_layer.weight_g"], before["head.last_layer.weight_g"])


def test_views_transform_is_deterministic_per_sample():
    module = script()
    transform = module.LAFSViewsTransform(32, (0.5,) * 3, (0.5,) * 3, num_local_views=3, seed=0)
    faces = SyntheticFaces(seed=0, image_size=48)
    record = Record("synthetic/3", {"index": 3, "faces": faces})
    sample = transform(record)
    assert sample["pixel_values"].shape == sample["clean_pixel_values"].shape == (5, 3, 32, 32)
    assert sample["clean_pixel_values"].min() >= -1 and sample["clean_pixel_values"].max() <= 1
    assert torch.equal(transform(record)["pixel_values"], sample["pixel_values"])
    assert not torch.equal(sample["pixel_values"][0], sample["pixel_values"][1])  # different crops
    assert not torch.equal(sample["pixel_values"][0], sample["clean_pixel_values"][0])  # global 1 is always blurred
    plain = module.LAFSViewsTransform(32, (0.5,) * 3, (0.5,) * 3, num_local_views=3, photometric=False, seed=0)(record)
    assert torch.equal(plain["pixel_values"], plain["clean_pixel_values"])
    for _ in range(50):
        left, top, width, height = module.random_resized_crop_box(np.random.default_rng(_), 112, 112, (0.4, 1.0))
        assert 0 <= left and left + width <= 112 and 0 <= top and top + height <= 112
        assert 0.4 * 112 * 112 * 0.97 <= width * height <= 112 * 112


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--local_points", "17"], r"--local_points \(17\) exceeds the model's num_patches \(16\)"),
        (["--crop_scale_min", "0"], "--crop_scale_min"),
        (["--landmark_model_name_or_path", "x"], "not both"),
        (["--teacher_temperature", "0"], "--teacher_temperature must be positive"),
        (["--resume_from_checkpoint", "latest"], "no complete checkpoint"),
    ],
)
def test_bad_arguments_fail_at_start(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        script().main(arguments(tmp_path / "out", "--max_steps", "1", *extra))
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_landmark_cnn_is_required(tmp_path):
    argv = [a for a in arguments(tmp_path / "out", "--max_steps", "1") if a != "--random_landmark_net"]
    with pytest.raises(ValueError, match="No landmark CNN: pass --landmark_model_name_or_path"):
        script().main(argv)
