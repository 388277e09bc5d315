import pytest
import torch

from lsutils.registry import LossContext, available_losses, build_loss, register_loss, smoothing_spec


def test_register_and_build_with_and_without_context():
    @register_loss("_test_scaled_ce")
    def _factory(scale=1.0):
        return lambda logits, y: scale * torch.nn.functional.cross_entropy(logits, y)

    @register_loss("_test_ctx")
    def _ctx_factory(context):
        return context

    assert "_test_scaled_ce" in available_losses()
    loss = build_loss({"name": "_test_scaled_ce", "scale": 2.0})
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert torch.allclose(loss(logits, y), 2 * torch.nn.functional.cross_entropy(logits, y))
    ctx = LossContext(device="cpu")
    assert build_loss({"name": "_test_ctx"}, ctx) is ctx
    assert isinstance(build_loss({"name": "_test_ctx"}), LossContext)


def test_errors():
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss({"name": "no-such-loss"})
    with pytest.raises(ValueError, match="'name'"):
        build_loss({"epsilon": 0.1})
    with pytest.raises(TypeError):
        build_loss("ls")
    with pytest.raises(TypeError, match="bad hyper-parameters"):
        register_loss("_test_kw")(lambda a=1: None)
        build_loss({"name": "_test_kw", "b": 2})
    with pytest.raises(ValueError, match="already registered"):
        register_loss("_test_dup")(lambda: None)
        register_loss("_test_dup")(lambda: None)


def test_smoothing_spec():
    assert smoothing_spec(0) == {"name": "ce"}
    assert smoothing_spec(0.1) == {"name": "ls", "epsilon": 0.1}
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        smoothing_spec(1.5)
