"""A small local version of transformers' `ModelTesterMixin` (which does not ship in the wheel).

A test class mixes in `ModelTesterMixin` and sets `model_tester`, an object with:

* `get_config()` -> a tiny config (<= 2 layers, < 1M parameters);
* `prepare_inputs(batch_size)` -> a dict of forward kwargs (deterministic: pass noise, never rely on RNG);
* `all_model_classes` and `auto_classes` (model class -> the Auto class that must load it);
* `training_loss(outputs)` -> a scalar whose gradient must reach every trainable parameter;
* `per_sample_outputs` -> output fields that must not depend on the other samples of the batch;
* `invalid_configs` -> list of (kwargs, message fragment) that must raise `ValueError`;
* `prepare_model(model)` -> optional hook to finish a model after construction (e.g. load a frozen teacher).
"""

from __future__ import annotations

import tempfile

import pytest
import torch


class ModelTesterMixin:
    model_tester = None

    def build(self, model_class):
        torch.manual_seed(0)
        model = model_class(self.model_tester.get_config())
        getattr(self.model_tester, "prepare_model", lambda m: m)(model)
        return model

    def test_model_is_small(self):
        config = self.model_tester.get_config()
        for sub_config in [config, *(getattr(config, key) for key in config.sub_configs)]:
            assert getattr(sub_config, "num_hidden_layers", 0) <= 2
        for model_class in self.model_tester.all_model_classes:
            num_params = sum(p.numel() for p in self.build(model_class).parameters())
            assert num_params < 1_000_000, f"{model_class.__name__} has {num_params} parameters; keep tests tiny"

    def test_save_load_round_trip_through_auto_classes(self):
        for model_class in self.model_tester.all_model_classes:
            model = self.build(model_class).eval()
            inputs = self.model_tester.prepare_inputs(batch_size=2)
            with torch.no_grad():
                expected = model(**inputs)
            with tempfile.TemporaryDirectory() as tmp:
                model.save_pretrained(tmp)
                reloaded = self.model_tester.auto_classes[model_class].from_pretrained(tmp).eval()
            assert type(reloaded) is model_class
            for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
                assert torch.equal(a, b), f"{name} changed in the round trip"
            for name, param in model.named_parameters():
                assert reloaded.get_parameter(name).requires_grad == param.requires_grad, name
            with torch.no_grad():
                actual = reloaded(**inputs)
            for key, value in expected.items():
                if isinstance(value, torch.Tensor):
                    torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=key)

    def test_batch_equivalence(self):
        for model_class in self.model_tester.all_model_classes:
            model = self.build(model_class).eval()
            inputs = self.model_tester.prepare_inputs(batch_size=3)
            single = {k: v[:1] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            with torch.no_grad():
                batched, alone = model(**inputs), model(**single)
            for key in self.model_tester.per_sample_outputs[model_class]:
                torch.testing.assert_close(batched[key][:1], alone[key], rtol=1e-4, atol=1e-5, msg=key)

    def test_every_trainable_parameter_gets_a_gradient(self):
        for model_class in self.model_tester.all_model_classes:
            model = self.build(model_class).train()
            outputs = model(**self.model_tester.prepare_inputs(batch_size=4))
            self.model_tester.training_loss(outputs).backward()
            missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
            assert not missing, f"{model_class.__name__}: no gradient for {missing}"
            assert not zero, f"{model_class.__name__}: all-zero gradient for {zero}"

    def test_gradient_checkpointing_gives_the_same_gradients(self):
        for model_class in self.model_tester.all_model_classes:
            if not model_class.supports_gradient_checkpointing:
                continue
            inputs = self.model_tester.prepare_inputs(batch_size=2)
            gradients = []
            for checkpointing in (False, True):
                model = self.build(model_class).train()
                if checkpointing:  # renamed activation_checkpointing_enable in recent 5.x
                    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
                self.model_tester.training_loss(model(**inputs)).backward()
                gradients.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
            assert gradients[0].keys() == gradients[1].keys()
            for name in gradients[0]:
                torch.testing.assert_close(gradients[1][name], gradients[0][name], rtol=1e-4, atol=1e-6, msg=name)

    def test_invalid_configs_raise_value_error(self):
        config_class = type(self.model_tester.get_config())
        for kwargs, message in self.model_tester.invalid_configs:
            with pytest.raises(ValueError, match=message):
                config_class(**{**self.model_tester.get_config().to_diff_dict(), **kwargs})

    def test_config_round_trip(self):
        config = self.model_tester.get_config()
        with tempfile.TemporaryDirectory() as tmp:
            config.save_pretrained(tmp)
            reloaded = type(config).from_pretrained(tmp)
        assert reloaded.to_dict() == config.to_dict()
