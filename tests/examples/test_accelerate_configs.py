"""The accelerate configs in `examples/accelerate_configs` load, launch and build plugins with accelerate's own code.

Nothing is launched: the launcher's argument handling (`_validate_launch_command`) and its environment builders
(`prepare_multi_gpu_env`, `prepare_deepspeed_cmd_env`, `prepare_simple_launcher_cmd_env`) are called directly, with
the port check patched out, so no socket is opened and no GPU, DeepSpeed or network is needed.
"""

import shlex
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils import launch as accelerate_launch

from ..script_utils import load_script


REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "examples" / "accelerate_configs"
TRAINING_SCRIPT = "examples/pretrain_mcf.py"
ALL_CONFIGS = sorted([*CONFIG_DIR.glob("*.yaml"), *CONFIG_DIR.glob("*.yml")])

# What each documented config must say. A new file is still covered by the generic tests below.
BF16 = {"mixed_precision": "bf16"}
ONE_NODE_8_GPUS = {"num_machines": 1, "num_processes": 8, **BF16}
MULTI_NODE = {"num_machines": 2, "num_processes": 16, "machine_rank": 0, "rdzv_backend": "static", **BF16}
EXPECTED = {
    "single_node_multi_gpu.yaml": {"distributed_type": DistributedType.MULTI_GPU, **ONE_NODE_8_GPUS},
    "multi_node_ddp.yaml": {"distributed_type": DistributedType.MULTI_GPU, **MULTI_NODE},
    "multi_node_fsdp2.yaml": {"distributed_type": DistributedType.FSDP, **MULTI_NODE},
    "deepspeed_zero2.yaml": {"distributed_type": DistributedType.DEEPSPEED, **ONE_NODE_8_GPUS},
    "cpu_2proc.yaml": {
        "distributed_type": DistributedType.MULTI_CPU, "num_machines": 1, "num_processes": 2, "use_cpu": True,
        "main_process_ip": "127.0.0.1", **BF16,
    },
}
GPU_TYPES = (DistributedType.MULTI_GPU, DistributedType.FSDP, DistributedType.DEEPSPEED)


def _ids(paths):
    return [path.name for path in paths]


def _launch_comment(path: Path) -> list[str]:
    """The command in the file's first line (`# [VAR=value ...] accelerate launch ...`), with $VARS filled in."""
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# "), f"{path.name} must start with a comment giving the launch command"
    words = shlex.split(first_line[2:])
    while words and "=" in words[0] and not words[0].startswith("-"):
        words.pop(0)  # leading environment assignments
    return [("1" if word == "$NODE_RANK" else "x") if word.startswith("$") else word for word in words]


def _launcher_args(path: Path):
    """Parse the file's own launch command with accelerate's parser and apply the config file, as `launch` does."""
    words = _launch_comment(path)
    assert words[:2] == ["accelerate", "launch"], f"{path.name}: the first line must be an `accelerate launch` command"
    args = launch_command_parser().parse_args(words[2:])
    assert Path(args.config_file) == path.relative_to(REPO_ROOT), f"{path.name}: the command must use this file"
    assert args.training_script == TRAINING_SCRIPT
    args.config_file = str(REPO_ROOT / args.config_file)  # the command is run from the repository root
    return _validate_launch_command(args)


def _env_from_launcher(args, defaults, mp_from_config, monkeypatch):
    """The environment the launcher would hand to the training processes (and the args it would give torchrun)."""
    monkeypatch.setattr(accelerate_launch, "is_port_in_use", lambda port: False)
    if args.use_deepspeed:
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        command, env = accelerate_launch.prepare_deepspeed_cmd_env(args)
        assert command is None, "single-node DeepSpeed goes through torchrun, not the `deepspeed` runner"
        return env
    if args.multi_gpu or args.use_fsdp:
        return accelerate_launch.prepare_multi_gpu_env(args)
    return accelerate_launch.prepare_simple_launcher_cmd_env(args)[1]


def _torchrun_args(args):
    """The arguments `multi_gpu_launcher` / the single-node DeepSpeed path pass to `torch.distributed.run`."""
    import torch.distributed.run as distrib_run

    return accelerate_launch._filter_args(
        args,
        distrib_run.get_args_parser(),
        ["--training_script", args.training_script, "--training_script_args", args.training_script_args],
    )


def _tiny_pretraining_model():
    from faceformers import MCFConfig
    from faceformers.models.mcf.modeling_mcf import MCFForPreTraining

    config = MCFConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=16,
        decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=32, projector_hidden_size=32, projection_dim=8,
        perceptual_teacher_config={"num_hidden_layers": 3},
    )
    return MCFForPreTraining(config)


def test_expected_configs_and_readme_are_present():
    names = {path.name for path in ALL_CONFIGS}
    assert set(EXPECTED) <= names, f"missing: {sorted(set(EXPECTED) - names)}"
    readme = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    assert "## Scaling out" in readme
    for name in names:
        assert f"examples/accelerate_configs/{name}" in readme, f"README.md does not document {name}"
    assert "accelerator.unwrap_model(model).update_momentum_encoder()" in readme


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_config_loads_with_accelerate(path):
    config = load_config_from_file(str(path))  # rejects unknown top-level keys
    assert isinstance(config, ClusterConfig)
    assert config.compute_environment.value == "LOCAL_MACHINE"
    assert config.mixed_precision in ("no", "fp16", "bf16")
    assert config.num_machines >= 1 and config.num_processes >= config.num_machines
    assert config.num_processes % config.num_machines == 0, "num_processes is the TOTAL over all machines"
    if config.num_machines > 1:
        assert config.main_process_ip and config.main_process_port, "multi-node needs the rank-0 address and port"
        assert config.machine_rank == 0, "keep machine_rank 0 in the file and pass --machine_rank per node"
    if config.distributed_type in GPU_TYPES:
        assert not config.use_cpu
    for key, value in EXPECTED.get(path.name, {}).items():
        assert getattr(config, key) == value, f"{path.name}: {key}={getattr(config, key)!r}, expected {value!r}"


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_script_arguments_in_first_line_parse(path):
    """The documented flags exist in pretrain_mcf.py, and bf16 is passed explicitly: the script's --mixed_precision
    defaults to `no` and Accelerator(mixed_precision=...) wins over the config file."""
    words = _launch_comment(path)
    script_args = words[words.index(TRAINING_SCRIPT) + 1 :]
    script = load_script(TRAINING_SCRIPT)
    argument_types = (script.ModelArguments, script.DataArguments, script.OptimizationArguments)
    *_, args = script.parse_arguments(argument_types, script_args)
    config = load_config_from_file(str(path))
    assert args.mixed_precision == config.mixed_precision, "pass --mixed_precision matching the config file"


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_launch_command_in_first_line_is_accepted_by_the_launcher(path, monkeypatch):
    args, defaults, mp_from_config = _launcher_args(path)
    # every key of the nested fsdp/deepspeed sections must be a real `accelerate launch` option (typos are ignored
    # silently by the launcher otherwise)
    known = {action.dest for action in launch_command_parser()._actions}
    for section, prefix in (("fsdp_config", "fsdp_"), ("deepspeed_config", "")):
        for key in getattr(defaults, section):
            option = key if key.startswith(prefix) else prefix + key
            assert option in known, f"{path.name}: unknown {section} key {key!r}"
    env = _env_from_launcher(args, defaults, mp_from_config, monkeypatch)
    assert env["ACCELERATE_MIXED_PRECISION"] == defaults.mixed_precision
    if args.multi_gpu or args.use_fsdp or args.use_deepspeed:
        import torch.distributed.run as distrib_run

        # what torchrun gets: processes per node, number of nodes, node rank and the rank-0 endpoint
        torchrun = _torchrun_args(args)
        assert torchrun.training_script == TRAINING_SCRIPT
        assert int(torchrun.nproc_per_node) == defaults.num_processes // defaults.num_machines
        if defaults.num_machines > 1:
            assert torchrun.nnodes == str(defaults.num_machines)
            assert torchrun.node_rank == 1, "--machine_rank $NODE_RANK must reach torchrun"
            assert torchrun.rdzv_backend == "static"
            endpoint = f"{defaults.main_process_ip}:{defaults.main_process_port}"
            assert distrib_run.get_rdzv_endpoint(torchrun) == endpoint


def test_multi_node_ddp_static_rendezvous(monkeypatch):
    import torch.distributed.run as distrib_run

    args, defaults, mp = _launcher_args(CONFIG_DIR / "multi_node_ddp.yaml")
    _env_from_launcher(args, defaults, mp, monkeypatch)
    assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed
    torchrun = _torchrun_args(args)
    assert (torchrun.nproc_per_node, torchrun.nnodes, torchrun.node_rank) == ("8", "2", 1)
    # accelerate 1.15 ignores `same_network` from the file (its --same_network default is False, not None), so the
    # static rendezvous gets the rank-0 node as --rdzv_endpoint; torchrun's static backend reads it the same way
    assert torchrun.rdzv_backend == "static"
    assert distrib_run.get_rdzv_endpoint(torchrun) == "10.0.0.1:29500"


def test_fsdp2_config_builds_plugin_that_wraps_every_mcf_layer(monkeypatch):
    from torch.distributed.fsdp import CPUOffloadPolicy
    from torch.distributed.fsdp.fully_sharded_data_parallel import StateDictType

    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from faceformers.models.mcf.modeling_mcf import MCFLayer

    path = CONFIG_DIR / "multi_node_fsdp2.yaml"
    fsdp = load_config_from_file(str(path)).fsdp_config
    assert fsdp["fsdp_version"] == 2
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "MCFLayer" == MCFLayer.__name__
    assert fsdp["fsdp_reshard_after_forward"] is True
    assert fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    assert fsdp["fsdp_cpu_ram_efficient_loading"] is False, (
        "accelerate 1.15 crashes in fsdp2_load_full_state_dict on models with persistent buffers "
        "(huggingface/accelerate#3898); only re-enable after checking that it is fixed"
    )

    # the plugin the training processes would build from the launcher's environment
    args, defaults, mp = _launcher_args(path)
    env = _env_from_launcher(args, defaults, mp, monkeypatch)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    for key, value in env.items():
        if key.startswith("FSDP_"):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    assert not isinstance(plugin.cpu_offload, CPUOffloadPolicy)
    assert plugin.transformer_cls_names_to_wrap == ["MCFLayer"]
    assert plugin.cpu_ram_efficient_loading is False

    # the name resolves in the real pre-training model: online encoder, decoder, momentum encoder and teacher blocks
    model = _tiny_pretraining_model()
    plugin.set_auto_wrap_policy(model)  # raises if the class name is not found in the model
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    wrapped = [name for name, module in model.named_modules() if policy(module)]
    layers = [name for name, module in model.named_modules() if isinstance(module, MCFLayer)]
    assert wrapped == layers and len(layers) == 2 + 1 + 2 + 3
    assert {name.split(".")[0] for name in wrapped} == {"mcf", "decoder", "momentum_encoder", "perceptual_teacher"}
    frozen = [name for name in wrapped if name.startswith(("momentum_encoder", "perceptual_teacher"))]
    assert all(not p.requires_grad for name in frozen for p in model.get_submodule(name).parameters())


def test_deepspeed_config_builds_zero2_plugin(monkeypatch):
    path = CONFIG_DIR / "deepspeed_zero2.yaml"
    ds = load_config_from_file(str(path)).deepspeed_config
    assert ds["zero_stage"] == 2 and ds["gradient_clipping"] == 1.0
    assert "gradient_accumulation_steps" not in ds, "it would override the script's --gradient_accumulation_steps"

    args, defaults, mp = _launcher_args(path)
    env = _env_from_launcher(args, defaults, mp, monkeypatch)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "2" and env["ACCELERATE_GRADIENT_CLIPPING"] == "1.0"
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()  # the deepspeed package itself is not needed to build the config
    plugin.set_mixed_precision("bf16")
    config = plugin.deepspeed_config
    assert config["zero_optimization"]["stage"] == 2
    assert config["gradient_clipping"] == 1.0
    assert config["gradient_accumulation_steps"] == "auto", "filled in from Accelerator(gradient_accumulation_steps)"
    assert config["bf16"] == {"enabled": True}


def test_cpu_config_needs_multi_gpu_flag_for_two_processes(monkeypatch):
    """HF_ECOSYSTEM 7.1: a MULTI_CPU config alone goes to the simple launcher, which starts ONE process."""
    path = CONFIG_DIR / "cpu_2proc.yaml"
    monkeypatch.setattr(accelerate_launch, "is_port_in_use", lambda port: False)

    plain = launch_command_parser().parse_args(["--config_file", str(path), TRAINING_SCRIPT])
    plain, _, _ = _validate_launch_command(plain)
    assert not plain.multi_gpu
    command, env = accelerate_launch.prepare_simple_launcher_cmd_env(plain)
    assert command == [sys.executable, TRAINING_SCRIPT], "one plain python process, not two"
    assert env["ACCELERATE_USE_CPU"] == "True"

    # the documented command: --multi_gpu -> torchrun with 2 processes; ACCELERATE_USE_CPU=true is in its first line
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert "ACCELERATE_USE_CPU=true" in first_line and "GLOO_SOCKET_IFNAME=lo" in first_line
    args, defaults, mp = _launcher_args(path)
    env = _env_from_launcher(args, defaults, mp, monkeypatch)
    torchrun = _torchrun_args(args)
    assert args.multi_gpu and torchrun.nproc_per_node == "2" and str(torchrun.master_port) == "29511"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
