"""Models of the book, all with the same two-part interface.

Every model splits into a feature extractor and a linear classifier::

    logits = model(x) == model.classifier(model.features(x))

* ``model.features(x)`` returns the *penultimate activations*, shape ``(B, D)``;
* ``model.classifier`` is an ``nn.Linear(D, K)`` whose rows are the class *templates*
  ``w_k`` of Müller et al. (2019), so the geometry chapter can project activations onto
  the plane through three templates.

Models (build them by name with :func:`build_model`):

* ``"cnn"`` — :class:`SmallCNN`, the workhorse of the ``smoke`` and ``cpu`` profiles. Two
  stride-2 3×3 conv–BN–ReLU blocks (28×28 → 14×14 → 7×7), flatten, a hidden linear layer
  of ``hidden`` = 128 units (the penultimate layer), then the classifier. It was chosen by
  measuring several designs on this book's 2-core CPU: a full-resolution first convolution
  or max-pooling costs 2–3× the time for < 0.5 points of accuracy on Fashion-MNIST, while
  stride-2 convolutions keep the work at 14×14 and 7×7. ``width=32`` (0.42 M parameters)
  trains at roughly 6,000–6,500 images/s on 2 cores with channels_last input (about 20 %
  faster there than contiguous input: 10.1 s vs 12.7 s for one 5-epoch run) and reaches
  ≈ 88 % test accuracy on Fashion-MNIST after 4 epochs on 12,000 images.
* ``"resnet20"``, ``"resnet32"``, ``"resnet44"``, ``"resnet56"`` — :class:`CifarResNet`, the
  CIFAR ResNets of He et al. (2016, §4.2): a 3×3 stem, three stages of ``n`` basic blocks
  with ``width``, ``2·width``, ``4·width`` channels (``width=16`` is the paper's), parameter-free
  shortcuts (option A: stride-2 subsampling and zero-padded channels), global average
  pooling (the penultimate layer, ``D = 4·width``), classifier. Depth ``6n + 2``.
* ``"airbench"`` — :class:`AirbenchNet`, the network of Keller Jordan's airbench (94 % on CIFAR-10 in a few
  seconds on an A100): a 2×2 stem convolution, three conv groups (conv3×3, max-pool, BN, GELU, conv3×3, BN, GELU)
  of ``width``, ``4·width``, ``4·width`` channels, a global max-pool (the penultimate layer, ``D = 4·width``),
  classifier. The ``gpu`` profile's model: wide, shallow and pooled early, so a GPU runs it near its peak.
* ``"mlp"`` — :class:`MLP`, two hidden ReLU layers of ``width`` units, for quick tests.

Each takes ``dropout`` (probability of the dropout layer placed between the penultimate
activations and the classifier; 0 = no dropout) — the practice chapter compares it with
label smoothing.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._validate import check_choice, check_int, check_num_classes, check_positive, check_probability, check_tensor
from .config import autocast

__all__ = ["SmallCNN", "CifarResNet", "AirbenchNet", "MLP", "build_model", "available_models", "predict_logits", "penultimate",
           "forward_logits"]


def _check_dropout(dropout: Any) -> float:
    return check_probability("dropout", dropout, low=0.0, high=1.0, high_open=True)


class _TwoPart(nn.Module):
    """Base class: ``forward(x) = classifier(head_dropout(features(x)))``."""

    classifier: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        """``D``, the dimension of the penultimate activations."""
        return self.classifier.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head_dropout(self.features(x)))


class SmallCNN(_TwoPart):
    """A fast CNN for small grey or colour images (Fashion-MNIST 28×28, also 32×32).

    ``(B, C, H, W)`` → conv3×3/2 (``width``) → conv3×3/2 (``2·width``) → flatten
    (``2·width · ⌈H/4⌉ · ⌈W/4⌉``) → Linear(``hidden``) + ReLU = features ``(B, hidden)``
    → [dropout] → classifier ``(B, num_classes)``. Every convolution is followed by
    BatchNorm and ReLU.

    >>> m = SmallCNN(num_classes=10, in_channels=1, width=8)
    >>> m(torch.zeros(2, 1, 28, 28)).shape, m.features(torch.zeros(2, 1, 28, 28)).shape
    (torch.Size([2, 10]), torch.Size([2, 128]))
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, hidden: int = 128,
                 image_size: int = 28, dropout: float = 0.0) -> None:
        super().__init__()
        check_num_classes(num_classes)
        for name, value in [("in_channels", in_channels), ("width", width), ("hidden", hidden),
                            ("image_size", image_size)]:
            check_int(name, value, minimum=1)
        dropout = _check_dropout(dropout)
        self.image_size = image_size
        side = (image_size + 1) // 2
        side = (side + 1) // 2
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, hidden),
            nn.ReLU(inplace=True),
        )
        self.head_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``(B, hidden)`` of images ``(B, C, H, W)``.

        The same function as ``self.body(x)``, evaluated faster (see :func:`_cpu_bf16_autocast` for the arithmetic):

        * channels_last activations are flattened in ``(H, W, C)`` order against a permuted copy of the hidden
          layer's weight (the same products, summed in another order): no copy of the activations, and the
          gradient keeps the channels_last format of the ReLU it flows into (mixed formats made ReLU's
          backward 4-30× slower);
        * under CPU bf16 autocast, a per-layer precision policy: the first convolution (3×3 on raw pixels,
          memory-bound, where oneDNN's bf16 kernels are slow) in float32, its output rounded to bf16; BatchNorm
          (float32 statistics and parameters) and ReLU on bf16 activations, which halves their memory traffic —
          they are memory-bound, and bf16 BatchNorm forward + backward measured ≈ 40 % faster than float32 here;
          the second convolution and the hidden linear layer (the compute-bound ones) in bf16, the convolution's
          weight gradient as one im2col GEMM from its saved bf16 input.
        """
        if x.dim() != 4 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"x must have shape (B, C, {self.image_size}, {self.image_size}) for this SmallCNN "
                             f"(built with image_size={self.image_size}), got {tuple(x.shape)}")
        conv1, bn1, relu1, conv2, bn2, relu2, _, hidden, relu3 = self.body
        if not _cpu_bf16_autocast(x):
            h = relu2(bn2(conv2(relu1(bn1(conv1(x))))))
            return relu3(_flatten_linear(h, hidden, None))
        with torch.autocast("cpu", enabled=False):
            h = relu1(bn1(conv1(x.float()).to(torch.bfloat16)))
            h = relu2(bn2(_Bf16Conv3x3.apply(h, conv2.weight, conv2.stride, conv2.padding)))
            return relu3(_flatten_linear(h, hidden, torch.bfloat16))


# --------------------------------------------------------------------------------------------- fast paths
def _cpu_bf16_autocast(x: torch.Tensor) -> bool:
    """Whether ``x`` is on the CPU inside ``torch.autocast("cpu", dtype=torch.bfloat16)``.

    That is where :func:`lsutils.config.precision` chose bf16 (a CPU with native bf16 instructions, or
    ``LSUTILS_PRECISION=bf16``). There plain autocast would run *every* convolution in bf16, and on such a
    CPU without AMX (AMD EPYC Zen 4: avx512_bf16) oneDNN's bf16 kernels for the small convolutions of
    :class:`SmallCNN` are no faster than float32 — the first convolution's and the weight gradients' are
    slower — while bf16 GEMMs run 2–4× the float32 rate and memory-bound layers (BatchNorm, ReLU) gain from
    half the bytes. So :meth:`SmallCNN.features` picks per layer.
    """
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def _flatten_linear(h: torch.Tensor, linear: nn.Linear, dtype: torch.dtype | None) -> torch.Tensor:
    """``linear(h.flatten(1))`` (``(C, H, W)`` order, as ``nn.Flatten``), in ``dtype`` (None = as autocast says).

    A channels_last ``h`` is read in its memory order ``(H, W, C)`` against the weight's columns permuted to
    that order, which gives the same products without a copy of ``h``.
    """
    b, c, hh, ww = h.shape
    if h.is_contiguous(memory_format=torch.channels_last) and not h.is_contiguous():
        flat = h.permute(0, 2, 3, 1).reshape(b, -1)                       # a view
        weight = linear.weight.view(-1, c, hh, ww).permute(0, 2, 3, 1)
        weight = weight.reshape(weight.shape[0], -1) if dtype is None else \
            weight.to(dtype, memory_format=torch.contiguous_format).view(weight.shape[0], -1)
    else:
        flat, weight = h.flatten(1), linear.weight if dtype is None else linear.weight.to(dtype)
    if dtype is None:
        return F.linear(flat, weight, linear.bias)
    return F.linear(flat.to(dtype), weight, linear.bias.to(dtype))


def _im2col_3x3_s2(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Patches ``(B·Ho·Wo, 9·C)`` (order kh, kw, c) of a 3×3 / stride 2 / padding 1 convolution over ``x`` (B, C, H, W)."""
    b, c, h, w = x.shape
    ho, wo = (h + 1) // 2, (w + 1) // 2
    xp = torch.empty((b, 2 * ho + 1, 2 * wo + 1, c), dtype=dtype, device=x.device)   # NHWC, zero border
    xp[:, 0].zero_()
    xp[:, :, 0].zero_()
    if 2 * ho > h:
        xp[:, h + 1].zero_()
    if 2 * wo > w:
        xp[:, :, w + 1].zero_()
    xp[:, 1:h + 1, 1:w + 1].copy_(x.permute(0, 2, 3, 1))
    sb, sh, sw, sc = xp.stride()
    patches = xp.as_strided((b, ho, wo, 3, 3, c), (sb, 2 * sh, 2 * sw, sh, sw, sc))
    return patches.reshape(b * ho * wo, 9 * c)


class _Bf16Conv3x3(torch.autograd.Function):
    """A bias-free 3×3 convolution computed in bf16: bf16 out (the input in bf16 channels_last, converted if it is
    not; the weight stays float32), the input's gradient in the input's dtype.

    Forward and input gradient: oneDNN's bf16 kernels; weight gradient (stride 2, padding 1): one bf16 GEMM of
    the output gradient with the im2col patches of the saved bf16 input, ``(O, B·Ho·Wo) @ (B·Ho·Wo, 9·C)`` — on
    a CPU with avx512_bf16 about 2.4× oneDNN's bf16 weight-gradient kernel for the book's layer. Deterministic.
    """

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        xb = x.to(torch.bfloat16, memory_format=torch.channels_last)      # no copy for a bf16 channels_last x
        wb = weight.to(torch.bfloat16)
        out = F.conv2d(xb, wb, stride=stride, padding=padding)
        ctx.conv = (tuple(stride), tuple(padding), weight.is_contiguous(memory_format=torch.channels_last), x.dtype)
        ctx.save_for_backward(xb, wb)
        return out

    @staticmethod
    def backward(ctx, grad):
        xb, wb = ctx.saved_tensors
        stride, padding, weight_channels_last, x_dtype = ctx.conv
        gb = grad.to(torch.bfloat16, memory_format=torch.channels_last)
        im2col = stride == (2, 2) and padding == (1, 1) and wb.shape[-2:] == (3, 3)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1] and not im2col, False]
        gx = gw = None
        if any(mask):
            gx, gw, _ = torch.ops.aten.convolution_backward(gb, xb, wb, None, list(stride), list(padding), [1, 1],
                                                            False, [0, 0], 1, mask)
            gx = gx.to(x_dtype) if gx is not None else None
        if ctx.needs_input_grad[1] and im2col:
            o, c = wb.shape[:2]
            g2 = gb.permute(0, 2, 3, 1).reshape(-1, o)                               # (B·Ho·Wo, O)
            gw = (g2.t() @ _im2col_3x3_s2(xb, torch.bfloat16)).view(o, 3, 3, c).permute(0, 3, 1, 2)
        if gw is not None:
            gw = gw.to(torch.float32, memory_format=torch.channels_last if weight_channels_last
                       else torch.contiguous_format)
        return gx, gw, None, None


class _BasicBlock(nn.Module):
    """3×3 conv–BN–ReLU–3×3 conv–BN plus an option-A (parameter-free) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride = stride
        self.pad = c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1:
            shortcut = shortcut[:, :, ::self.stride, ::self.stride]
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut, inplace=True)


class CifarResNet(_TwoPart):
    """The CIFAR ResNet of He et al. (2016): depth ``6·blocks_per_stage + 2``.

    ``(B, C, H, W)`` → stem conv3×3 (``width``) → 3 stages (``width``, ``2·width``,
    ``4·width`` channels; stride 1, 2, 2) → global average pool = features ``(B, 4·width)``
    → [dropout] → classifier ``(B, num_classes)``. ``blocks_per_stage=3`` is ResNet-20
    (0.27 M parameters at ``width=16``), ``9`` is ResNet-56 (0.85 M).

    >>> m = CifarResNet(num_classes=10, blocks_per_stage=1, width=8)
    >>> m(torch.zeros(2, 3, 32, 32)).shape, m.feature_dim
    (torch.Size([2, 10]), 32)
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, blocks_per_stage: int = 3, width: int = 16,
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_num_classes(num_classes)
        for name, value in [("in_channels", in_channels), ("blocks_per_stage", blocks_per_stage), ("width", width)]:
            check_int(name, value, minimum=1)
        if width % 2:
            raise ValueError(f"width must be even (option-A shortcuts zero-pad half the new channels on each side), "
                             f"got {width}")
        dropout = _check_dropout(dropout)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.head_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(4 * width, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``(B, 4·width)``: global average of the last stage."""
        if x.dim() != 4:
            raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
        return self.stages(self.stem(x)).mean(dim=(2, 3))


class _ConvGroup(nn.Module):
    """airbench's conv group: conv3×3 → max-pool 2 → BN → GELU → conv3×3 → BN → GELU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.activ = nn.GELU()
        for conv in (self.conv1, self.conv2):      # identity initialisation of the first c_in filters (airbench)
            with torch.no_grad():
                nn.init.dirac_(conv.weight[:min(conv.in_channels, conv.out_channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class AirbenchNet(_TwoPart):
    """The network of airbench (Keller Jordan, "94 % on CIFAR-10 in 3.29 seconds on a single GPU", 2024).

    ``(B, C, H, W)`` → stem conv2×2 (``2·C·4`` channels, no padding, with bias) → GELU → three conv groups of
    ``width``, ``4·width``, ``4·width`` channels, each conv3×3 → max-pool 2 → BN → GELU → conv3×3 → BN → GELU
    (32×32 → 31 → 15 → 7 → 3) → global max-pool = features ``(B, 4·width)`` → [dropout] → classifier
    ``(B, num_classes)``. ``width=64`` is airbench94's network (1.97 M parameters, 0.71 GFLOP per 32×32 image for
    a training step, forward + backward); the ``gpu`` profile trains ``width=32`` (0.50 M parameters,
    0.20 GFLOP). Like airbench, the 3×3 convolutions start as identity maps on their first input channels.

    What is *not* airbench here: the stem is learned (airbench freezes it as a patch-whitening layer computed from
    the training images, which ``build_model`` does not see), BatchNorm keeps its learned scale, the classifier has
    a bias and no 1/9 output scaling (the book trains every model with AdamW + one-cycle, not airbench's tuned
    Nesterov SGD), the last pooling is global (the same as airbench's 3×3 max-pool on 32×32 inputs, and it accepts
    other sizes: 28×28 Fashion-MNIST works), and there is no label smoothing, test-time augmentation or
    lookahead — the book compares losses, so the network is the only piece it borrows. Inputs need
    ``H, W ≥ 9``.

    >>> m = AirbenchNet(num_classes=10, in_channels=3, width=8)
    >>> m(torch.zeros(2, 3, 32, 32)).shape, m.feature_dim
    (torch.Size([2, 10]), 32)
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_int("in_channels", in_channels, minimum=1)
        check_int("width", width, minimum=1)
        dropout = _check_dropout(dropout)
        stem = 2 * in_channels * 2 * 2
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 2, padding=0, bias=True), nn.GELU())
        self.groups = nn.Sequential(_ConvGroup(stem, width), _ConvGroup(width, 4 * width),
                                    _ConvGroup(4 * width, 4 * width))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(4 * width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``(B, 4·width)``: the global max of the last group's maps."""
        if x.dim() != 4 or min(x.shape[-2:]) < 9:
            raise ValueError(f"x must have shape (B, C, H, W) with H, W >= 9, got {tuple(x.shape)}")
        return self.pool(self.groups(self.stem(x))).flatten(1)


class MLP(_TwoPart):
    """Flatten → Linear(``width``) → ReLU → Linear(``width``) → ReLU = features ``(B, width)`` → classifier.

    >>> MLP(num_classes=3, in_features=4, width=5)(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, num_classes: int = 10, in_features: int = 784, width: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_int("in_features", in_features, minimum=1)
        check_int("width", width, minimum=1)
        dropout = _check_dropout(dropout)
        self.in_features = in_features
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU(inplace=True),
                                  nn.Linear(width, width), nn.ReLU(inplace=True))
        self.head_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``(B, width)`` of inputs ``(B, ...)`` with ``in_features`` values each."""
        if x.dim() < 2 or x[0].numel() != self.in_features:
            raise ValueError(f"x must have shape (B, ...) with {self.in_features} values per example, "
                             f"got {tuple(x.shape)}")
        return self.body(x)


_RESNET_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}
_DEFAULT_WIDTH = {"cnn": 32, "mlp": 256, "airbench": 64, **{name: 16 for name in _RESNET_DEPTHS}}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted.

    >>> available_models()[:2]
    ['airbench', 'cnn']
    """
    return sorted(_DEFAULT_WIDTH)


def build_model(name: str, num_classes: int, in_channels: int, width: int | None = None, *, dropout: float = 0.0,
                image_size: int | None = None, **kw: Any) -> nn.Module:
    """Build a model by name: ``"cnn"``, ``"airbench"``, ``"mlp"``, ``"resnet20"``, ``"resnet32"``, ``"resnet44"``,
    ``"resnet56"``.

    ``width`` is the model's width knob (``None`` = its default: cnn 32, airbench 64, mlp 256, resnets 16);
    ``dropout`` the dropout probability before the classifier; ``image_size`` the side of the
    square input (``None`` = 28 for one channel, as Fashion-MNIST, else 32, as CIFAR; the
    ResNets and airbench accept any size). Extra keywords go to the model class (e.g. ``hidden`` for the cnn).
    The model maps ``(B, in_channels, image_size, image_size)`` to logits ``(B, num_classes)``
    and has ``.features`` and ``.classifier``.

    >>> m = build_model("cnn", num_classes=10, in_channels=1, width=8)
    >>> m(torch.zeros(4, 1, 28, 28)).shape
    torch.Size([4, 10])
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    check_choice("name", name, available_models())
    check_num_classes(num_classes)
    check_int("in_channels", in_channels, minimum=1)
    width = _DEFAULT_WIDTH[name] if width is None else check_int("width", width, minimum=1)
    if image_size is None:
        image_size = 28 if in_channels == 1 else 32
    check_int("image_size", image_size, minimum=1)
    if name == "cnn":
        return SmallCNN(num_classes, in_channels, width=width, image_size=image_size, dropout=dropout, **kw)
    if name == "mlp":
        return MLP(num_classes, in_channels * image_size * image_size, width=width, dropout=dropout, **kw)
    if name == "airbench":
        return AirbenchNet(num_classes, in_channels, width=width, dropout=dropout, **kw)
    return CifarResNet(num_classes, in_channels, blocks_per_stage=_RESNET_DEPTHS[name], width=width,
                       dropout=dropout, **kw)


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _model_device(model: nn.Module, device: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def forward_logits(model: nn.Module, x: torch.Tensor, device: Any = None) -> torch.Tensor:
    """Logits ``(B, K)`` float32 in the trainer's arithmetic: the body under :func:`lsutils.config.autocast`, and a
    final ``.classifier`` (for models with ``.features`` and ``.classifier``, as every lsutils model) in float32,
    so that calibration and OOD metrics see full-precision logits (bf16 alone would tie many confidences)."""
    dev = _model_device(model, device)
    if callable(getattr(model, "features", None)) and isinstance(getattr(model, "classifier", None), nn.Module):
        with autocast(dev):
            h = model.features(x)
        head = getattr(model, "head_dropout", None)
        h = head(h.float()) if isinstance(head, nn.Module) else h.float()
        return model.classifier(h).float()
    with autocast(dev):
        return model(x).float()


@torch.no_grad()
def _apply_chunked(model: nn.Module, fn, x: torch.Tensor, batch_size: int, device: Any) -> torch.Tensor:
    check_tensor("x", x, floating=True, min_dim=2, allow_empty=True)
    batch_size = check_positive("batch_size", batch_size, integer=True)
    dev = _model_device(model, device)
    was_training = model.training
    model.eval()
    channels_last = x.dim() == 4
    try:
        outs = []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(dev, non_blocking=True)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            outs.append(fn(xb).float().cpu())
        if not outs:  # empty input: probe one zero example for the output width, return (0, width)
            outs = [fn(torch.zeros((1,) + tuple(x.shape[1:]), dtype=x.dtype, device=dev)).float().cpu()[:0]]
    finally:
        model.train(was_training)
    return torch.cat(outs)


def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2048, device: Any = None) -> torch.Tensor:
    """Logits ``(N, K)`` (float32, on the CPU) of inputs ``x`` ``(N, C, H, W)``, in eval mode, without gradients.

    Runs in chunks of ``batch_size`` on ``device`` (``None`` = where the model's parameters are), in the
    trainer's arithmetic (:func:`forward_logits`: the body in bf16 where the trainer uses bf16, the classifier
    in float32), and restores the model's training mode afterwards.

    >>> m = build_model("mlp", num_classes=3, in_channels=1, width=4, image_size=2)
    >>> predict_logits(m, torch.zeros(5, 1, 2, 2), batch_size=2).shape
    torch.Size([5, 3])
    """
    _check_model(model)
    return _apply_chunked(model, lambda xb: forward_logits(model, xb, xb.device), x, batch_size, device)


def penultimate(model: nn.Module, x: torch.Tensor, batch_size: int = 2048, device: Any = None) -> torch.Tensor:
    """Penultimate activations ``model.features(x)``, shape ``(N, D)`` (float32, CPU), like :func:`predict_logits`.

    >>> m = build_model("mlp", num_classes=3, in_channels=1, width=4, image_size=2)
    >>> penultimate(m, torch.zeros(5, 1, 2, 2)).shape
    torch.Size([5, 4])
    """
    _check_model(model)
    if not callable(getattr(model, "features", None)):
        raise TypeError(f"model must have a .features(x) method (every lsutils model has one); "
                        f"{type(model).__name__} does not")

    def features(xb: torch.Tensor) -> torch.Tensor:
        with autocast(xb.device):
            return model.features(xb)

    return _apply_chunked(model, features, x, batch_size, device)
