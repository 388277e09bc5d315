import pytest
import torch

from lsutils.models import (MLP, AirbenchNet, CifarResNet, SmallCNN, available_models, build_model, penultimate,
                            predict_logits)

CASES = [("cnn", 1, 28, 8), ("cnn", 3, 32, 8), ("mlp", 1, 28, 16), ("resnet20", 3, 32, 8), ("resnet20", 1, 28, 8),
         ("airbench", 3, 32, 4), ("airbench", 1, 28, 4)]


def _inputs(c, s, n=6, seed=0):
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,c,s,width", CASES)
def test_shapes_and_two_part_interface(name, c, s, width):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=c, width=width).eval()
    x = _inputs(c, s)
    feats = model.features(x)
    assert feats.shape == (6, model.classifier.in_features)
    assert isinstance(model.classifier, torch.nn.Linear) and model.classifier.out_features == 7
    logits = model(x)
    assert logits.shape == (6, 7)
    torch.testing.assert_close(model.classifier(feats), logits)


def test_paper_parameter_counts():
    # He et al. (2016), Table 6: ResNet-20 0.27M, ResNet-56 0.85M parameters
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert round(count(build_model("resnet20", 10, 3)) / 1e6, 2) == 0.27
    assert round(count(build_model("resnet56", 10, 3)) / 1e6, 2) == 0.85
    assert build_model("resnet56", 10, 3).classifier.in_features == 64


def test_dropout_sits_before_the_classifier():
    torch.manual_seed(0)
    model = build_model("cnn", 10, 1, width=8, dropout=0.5)
    x = _inputs(1, 28)
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout active in training
    model.eval()
    torch.testing.assert_close(model(x), model.classifier(model.features(x)))
    assert isinstance(build_model("cnn", 10, 1).head_dropout, torch.nn.Identity)
    for name in ("mlp", "resnet20", "airbench"):
        assert isinstance(build_model(name, 10, 1, dropout=0.2).head_dropout, torch.nn.Dropout)


def test_predict_logits_chunks_equal_one_pass_and_restore_mode(monkeypatch):
    monkeypatch.setenv("LSUTILS_PRECISION", "fp32")       # compare with the plain float32 forward pass
    torch.manual_seed(0)
    model = build_model("cnn", 10, 1, width=8)
    model.train()
    x = _inputs(1, 28, n=37)
    one = predict_logits(model, x, batch_size=1000)
    assert model.training, "training mode must be restored"
    chunked = predict_logits(model, x, batch_size=5)
    torch.testing.assert_close(chunked, one)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(one, model(x))  # eval mode: BatchNorm uses running statistics
    assert not model.training  # eval stays eval
    assert one.dtype == torch.float32 and one.device.type == "cpu" and not one.requires_grad
    monkeypatch.setenv("LSUTILS_PRECISION", "bf16")       # bf16 body, float32 classifier: close, not equal
    torch.testing.assert_close(predict_logits(model, x), one, atol=0.05, rtol=0.02)
    monkeypatch.setenv("LSUTILS_PRECISION", "fp32")
    feats = penultimate(model, x, batch_size=4)
    assert feats.shape == (37, 128) and not feats.requires_grad
    torch.testing.assert_close(model.classifier(feats), one)
    assert predict_logits(model, x[:0]).shape == (0, 10)
    assert penultimate(model, x[:0]).shape == (0, 128)


def test_models_are_deterministic_by_seed():
    torch.manual_seed(3)
    a = build_model("resnet20", 10, 3, width=8)
    torch.manual_seed(3)
    b = build_model("resnet20", 10, 3, width=8)
    x = _inputs(3, 32, n=2)
    torch.testing.assert_close(predict_logits(a, x), predict_logits(b, x))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"name must be one of .*'cnn'.*got 'vgg'"):
        build_model("vgg", 10, 1)
    with pytest.raises(TypeError, match="name"):
        build_model(None, 10, 1)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cnn", 1, 1)
    with pytest.raises(TypeError, match="width"):
        build_model("cnn", 10, 1, width=8.0)
    with pytest.raises(ValueError, match="dropout"):
        build_model("mlp", 10, 1, dropout=1.0)
    with pytest.raises(ValueError, match="even"):
        CifarResNet(width=15)
    with pytest.raises(ValueError, match=r"\(B, C, 28, 28\)"):
        SmallCNN(width=4)(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="784 values"):
        MLP(width=4)(torch.zeros(2, 1, 10, 10))
    model = build_model("mlp", 10, 1, width=4)
    with pytest.raises(TypeError, match="model"):
        predict_logits("not a model", torch.zeros(1, 1, 28, 28))
    with pytest.raises(TypeError, match="x must be a floating"):
        predict_logits(model, torch.zeros(1, 1, 28, 28, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_size"):
        predict_logits(model, torch.zeros(1, 1, 28, 28), batch_size=0)
    with pytest.raises(TypeError, match="features"):
        penultimate(torch.nn.Linear(3, 2), torch.zeros(1, 3))


def test_available_models():
    assert set(available_models()) >= {"cnn", "mlp", "resnet20", "resnet56", "airbench"}


def test_airbench_network_shape_parameters_and_flops():
    from torch.utils.flop_counter import FlopCounterMode

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # airbench94's network at width 64: 1.97 M parameters (our classifier adds 10 biases, BN keeps its scales)
    assert round(count(build_model("airbench", 10, 3)) / 1e6, 2) == 1.97
    m = build_model("airbench", 10, 3, width=8)
    assert isinstance(m, AirbenchNet) and m.feature_dim == 32 and m.stem[0].out_channels == 24
    assert [g.conv1.out_channels for g in m.groups] == [8, 32, 32]
    # airbench's identity initialisation: the first c_in filters of each 3×3 convolution are Dirac deltas
    w = m.groups[1].conv1.weight
    assert torch.equal(w[:8, :, 1, 1], torch.eye(8)) and w[:8].abs().sum() == 8
    # FLOPs of one training step per 32×32 image (forward + backward), the gpu plan's numbers
    m = build_model("airbench", 10, 3, width=32)
    x = _inputs(3, 32, n=2)
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.cross_entropy(m(x), torch.zeros(2, dtype=torch.long)).backward()
    assert 190e6 < counter.get_total_flops() / 2 < 205e6
    with pytest.raises(ValueError, match="H, W >= 9"):
        m(torch.zeros(2, 3, 8, 8))


def test_airbench_trains_on_a_tiny_problem():
    from lsutils import train

    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 4
    x = torch.randn(64, 3, 16, 16, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float() * 0.5
    torch.manual_seed(0)
    model = build_model("airbench", 4, 3, width=4)
    h = train.fit(model, x, y, torch.nn.functional.cross_entropy, epochs=15, batch_size=16, lr=1e-2, device="cpu",
                  progress=False)
    assert h["train_loss"][-1] < 0.5 * h["train_loss"][0] and h["train_acc"][-1] >= 0.9


def test_smallcnn_fast_paths_compute_the_same_function():
    # channels_last input: the (H, W, C)-order flatten gives the body's function (float64 reference), gradients too
    from lsutils.models import _Bf16Conv3x3
    torch.manual_seed(0)
    cl = torch.channels_last
    for side, c in ((28, 1), (9, 3)):
        model = build_model("cnn", 10, c, width=4, image_size=side).to(memory_format=cl)
        ref = build_model("cnn", 10, c, width=4, image_size=side).double()
        ref.load_state_dict(model.state_dict())
        x = _inputs(c, side, n=8).contiguous(memory_format=cl)
        y = torch.arange(8) % 10
        out = model(x)
        expect = ref.classifier(ref.body(x.double()))
        torch.testing.assert_close(out.double(), expect, rtol=1e-5, atol=1e-5)
        torch.nn.functional.cross_entropy(out, y).backward()
        torch.nn.functional.cross_entropy(expect, y).backward()
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad.double(), q.grad, rtol=1e-4, atol=1e-6)
        # under CPU bf16 autocast: close to float32 (bf16 rounding), same parameters, float32 features
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = model.features(x)
        assert feats.dtype == torch.bfloat16
        torch.testing.assert_close(feats.double(), ref.body(x.double()), rtol=0.05, atol=0.05)
    # the bf16 convolution: gradients equal those of a float64 convolution of the bf16-rounded operands
    x = torch.randn(5, 6, 9, 10).contiguous(memory_format=cl).requires_grad_(True)
    w = torch.randn(7, 6, 3, 3).contiguous(memory_format=cl).requires_grad_(True)
    out = _Bf16Conv3x3.apply(x, w, (2, 2), (1, 1))
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=cl)
    g = torch.randn(out.shape).bfloat16()
    out.backward(g)
    xd = x.detach().bfloat16().double().requires_grad_(True)
    wd = w.detach().bfloat16().double().requires_grad_(True)
    ref = torch.nn.functional.conv2d(xd, wd, stride=2, padding=1)
    ref.backward(g.bfloat16().double())
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(w.grad.double(), wd.grad, rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(x.grad.double(), xd.grad, rtol=2e-2, atol=5e-2)
    assert w.grad.is_contiguous(memory_format=cl) and w.grad.dtype == x.grad.dtype == torch.float32
    # a bf16 input (what SmallCNN passes) gets a bf16 gradient, the same numbers
    xb = x.detach().bfloat16().contiguous(memory_format=cl).requires_grad_(True)
    wb = w.detach().clone().requires_grad_(True)
    outb = _Bf16Conv3x3.apply(xb, wb, (2, 2), (1, 1))
    outb.backward(g)
    assert torch.equal(outb, out) and torch.equal(wb.grad, w.grad) and xb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(xb.grad.float(), x.grad, rtol=1e-2, atol=1e-2)
