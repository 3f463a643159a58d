# Two entry points: `make demo` and `make test`. Each creates (or refreshes) .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# A small MCF (4 blocks, 64 px) pre-trained for 300 steps on the built-in synthetic faces, then reloaded and used.
DEMO_DIR := outputs/demo
DEMO_CONFIG := hidden_size=128,num_hidden_layers=4,num_attention_heads=4,intermediate_size=256,image_size=64,patch_size=8,decoder_hidden_size=64,decoder_num_hidden_layers=2,decoder_num_attention_heads=4,decoder_intermediate_size=128,projector_hidden_size=256,projection_dim=64

demo: $(STAMP)
	$(VENV)/bin/accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		examples/pretrain_mcf.py --output_dir $(DEMO_DIR) --config_overrides $(DEMO_CONFIG) --random_teacher \
		--max_steps 300 --warmup_steps 20 --per_device_train_batch_size 32 --learning_rate 1e-3 \
		--logging_steps 50 --checkpointing_steps 100 --dataloader_num_workers 1 --cpu
	$(VENV)/bin/python examples/demo_mcf.py --model_dir $(DEMO_DIR)
	@echo "Demo done: MCFModel + image processor in $(DEMO_DIR), the full MCFForPreTraining in $(DEMO_DIR)/pretraining"

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

test-slow: $(STAMP)
	RUN_SLOW=1 $(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_mcf.py
