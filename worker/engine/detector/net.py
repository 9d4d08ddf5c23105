"""The detector network: a compact anchor-free (CenterNet-style) model with a corner head.

One grayscale image in, three maps out at stride 4:
- `heat`    [N, 1, H, W]  probability that a code's centre falls in the cell,
- `box`     [N, 4, H, W]  distances in input pixels from the cell centre to the code's
                          left, top, right and bottom edges,
- `corners` [N, 8, H, W]  the four corners (x, y offsets from the cell centre, input pixels)
                          in canonical order (see `canonical_corners`).

The decoding of those maps (peaks, boxes, quads, NMS) is plain numpy in
`worker.engine.detector.geometry`, shared by both runtimes, so the exported ONNX graph
and the PyTorch module are the same function and parity is a tensor comparison.

The network belongs to the engine (the PyTorch runtime builds it to load the shipped
`.pt` weights); training, export and evaluation in `models/detector` import it from here,
so the runtime never imports training code.
Depthwise-separable blocks and ReLU only: the operators ONNX Runtime's CPU provider
runs fastest, and nothing a quantiser trips on.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from worker.engine.detector.configs import CONFIGS, STRIDE, NetConfig

# Sigmoid prior of the heat logits at initialisation (CenterNet): few cells hold a centre.
_HEAT_PRIOR_BIAS = -4.6


def conv_bn(c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SeparableBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1; residual when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = conv_bn(c_in, c_in, 3, stride, groups=c_in)
        self.pointwise = conv_bn(c_in, c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        return x + y if self.residual else y


def _stage(c_in: int, c_out: int, depth: int) -> nn.Sequential:
    blocks = [SeparableBlock(c_in, c_out, 2)]
    blocks += [SeparableBlock(c_out, c_out) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class QRDetector(nn.Module):
    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        w, d, n = config.widths, config.depths, config.neck
        self.stem = conv_bn(1, w[0], 3, 2)
        self.s4 = _stage(w[0], w[1], d[0])
        self.s8 = _stage(w[1], w[2], d[1])
        self.s16 = _stage(w[2], w[3], d[2])
        self.s32 = _stage(w[3], w[4], d[3])
        self.lateral = nn.ModuleList([conv_bn(c, n) for c in (w[1], w[2], w[3], w[4])])
        self.merge = nn.ModuleList([SeparableBlock(n, n) for _ in range(3)])
        self.head = nn.Sequential(SeparableBlock(n, n), nn.Conv2d(n, 13, 1))
        nn.init.constant_(self.head[-1].bias[:1], _HEAT_PRIOR_BIAS)

    def forward_raw(self, image: torch.Tensor) -> torch.Tensor:
        """[N, 13, H/4, W/4]: heat logit, 4 log-distances (in strides), 8 normalised corners."""
        x = self.stem(image)
        f4 = self.s4(x)
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        features = [lat(f) for lat, f in zip(self.lateral, (f4, f8, f16, f32), strict=True)]
        top = features[3]
        for level in (2, 1, 0):
            top = F.interpolate(top, scale_factor=2.0, mode="nearest") + features[level]
            top = self.merge[level](top)
        return self.head(top)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return decode_raw(self.forward_raw(image))


def decode_raw(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw head output to (heat, box px, corner offsets px); part of the exported graph."""
    heat = torch.sigmoid(raw[:, :1])
    # Clamped so a wild logit cannot overflow; e^6 strides is far beyond any input size.
    box = torch.exp(raw[:, 1:5].clamp(-4.0, 6.0)) * STRIDE
    # Corners are predicted relative to the half box: bounded, and the same for any size.
    half_w = (box[:, 0:1] + box[:, 2:3]) * 0.5
    half_h = (box[:, 1:2] + box[:, 3:4]) * 0.5
    centre_x = (box[:, 2:3] - box[:, 0:1]) * 0.5  # box centre relative to the cell centre
    centre_y = (box[:, 3:4] - box[:, 1:2]) * 0.5
    corners_x = centre_x + raw[:, 5:13:2] * half_w
    corners_y = centre_y + raw[:, 6:13:2] * half_h
    corners = torch.stack((corners_x, corners_y), dim=2).flatten(1, 2)
    return heat, box, corners


def build(name: str) -> QRDetector:
    return QRDetector(CONFIGS[name])


__all__ = ["CONFIGS", "STRIDE", "NetConfig", "QRDetector", "build", "decode_raw"]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
