import dataclasses

import pytest
import torch

from lsutils.config import PROFILE_ENV_VAR, PROFILE_NAMES, Profile, default_device, get_profile


def test_env_var_selects_profile(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV_VAR, "smoke")
    assert get_profile().name == "smoke"
    monkeypatch.setenv(PROFILE_ENV_VAR, " CPU ")
    assert get_profile().name == "cpu"
    # an explicit name wins over the environment
    assert get_profile("smoke").name == "smoke"


def test_default_depends_on_cuda(monkeypatch):
    monkeypatch.delenv(PROFILE_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p = get_profile()
    assert (p.name, p.device) == ("cpu", "cpu")
    assert default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    p = get_profile()
    assert (p.name, p.device, p.dataset) == ("gpu", "cuda", "cifar10")
    monkeypatch.setenv(PROFILE_ENV_VAR, "")  # empty = unset
    assert get_profile().name == "gpu"


def test_bad_names(monkeypatch):
    with pytest.raises(ValueError, match=r"'nope'.*smoke, cpu, gpu"):
        get_profile("nope")
    monkeypatch.setenv(PROFILE_ENV_VAR, "fast")
    with pytest.raises(ValueError, match=PROFILE_ENV_VAR):
        get_profile()
    with pytest.raises(TypeError, match="str"):
        get_profile(3)


def test_gpu_profile_without_cuda_warns(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="no CUDA"):
        p = get_profile("gpu")
    assert p.device == "cpu" and p.dataset == "cifar10" and p.model == "airbench"


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_profiles_are_consistent(name, recwarn):
    p = get_profile(name)
    assert isinstance(p, Profile) and p.name == name
    assert len(p.seeds) >= (2 if name == "smoke" else 3) and len(set(p.seeds)) == len(p.seeds)
    assert p.epochs >= 1 and p.batch_size >= 1 and p.lr > 0 and p.weight_decay >= 0 and p.n_val >= 1
    assert (p.dataset == "cifar10") == (name == "gpu")
    assert not p.augment          # every profile memorises a small training set (see the config docstring)
    text = str(p)
    assert all(len(line) <= 72 for line in text.splitlines())      # fits the page where chapters print it
    assert text.startswith(f"profile={name} ") and f"seeds={p.seeds}" in text
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.epochs = 99  # type: ignore[misc]


def test_profile_sizes_grow():
    smoke, cpu = get_profile("smoke"), get_profile("cpu")
    assert smoke.n_train * smoke.epochs < cpu.n_train * cpu.epochs and smoke.width <= cpu.width   # a miniature
    assert cpu.n_test is None and "n_test=all" in str(cpu)


def test_gpu_profile_is_in_the_books_regime_and_fits_colab():
    """The gpu profile: a small CIFAR-10 training set trained for many epochs (the regime), sized for a T4."""
    from torch.utils.flop_counter import FlopCounterMode

    from lsutils.config import _table
    from lsutils.models import build_model

    gpu, cpu = _table("cuda")["gpu"], _table("cpu")["cpu"]
    assert gpu.device == "cuda" and gpu.dataset == "cifar10" and gpu.n_train is not None and not gpu.augment
    # 50,000 CIFAR-10 training images: the profile's split and chapter 5's transfer set (4 x n_train) fit in it
    assert gpu.n_train + gpu.n_val <= 50000 and 4 * gpu.n_train <= 50000 - gpu.n_val
    # at least as many passes over its training set, and steps, as the cpu profile (which reaches 100 %)
    assert gpu.epochs >= cpu.epochs
    assert gpu.epochs * -(-gpu.n_train // gpu.batch_size) >= cpu.epochs * -(-cpu.n_train // cpu.batch_size)
    # the compute of one model: training + a validation pass per epoch, under 0.1 PFLOP (about 15 T4-seconds
    # at the 6.5 TFLOP/s that tools/gpu_plan.py assumes)
    model = build_model(gpu.model, 10, 3, width=gpu.width).train()
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.cross_entropy(model(torch.zeros(2, 3, 32, 32)), torch.zeros(2, dtype=torch.long)).backward()
    step = counter.get_total_flops() / 2
    total = step * gpu.n_train * gpu.epochs + step / 3 * gpu.n_val * gpu.epochs
    assert 0.05e15 < total < 0.1e15
