"""A timm backbone with the class head and the two byproduct heads of LUAB.

``forward(images)`` → ``(logits [B, C], point [B, 2], heat [B, h, w])``: the click point in crop coordinates
(sigmoid, from the pooled features) and attention logits over the last feature map (a 1×1 convolution;
h × w = image_size / output_stride). ``pool="attention"`` pools the features for the class and point heads
with the softmax of the heat logits instead of the mean: trained on the annotators' traces (LUAB), the heat
head then steers the classifier to where people looked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn


class LUABModel(nn.Module):
    def __init__(self, backbone: str, num_classes: int, output_stride: int = 32,
                 pretrained_path: Optional[str] = None, pool: str = "avg") -> None:
        super().__init__()
        if pool not in ("avg", "attention"):
            raise ValueError(f"--pool must be avg or attention, got {pool!r}")
        self.pool = pool
        import timm

        kwargs = {"output_stride": output_stride} if output_stride != 32 else {}
        try:
            self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="", **kwargs)
        except (RuntimeError, ValueError, TypeError) as exc:  # unknown name, or no output_stride support
            raise ValueError(f"--model {backbone!r} with output_stride={output_stride}: {exc}") from exc
        if pretrained_path:
            load_backbone(self.backbone, pretrained_path)
        width = self.backbone.num_features
        self.classifier = nn.Linear(width, num_classes)
        self.point_head = nn.Linear(width, 2)
        self.heat_head = nn.Conv2d(width, 1, kernel_size=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.backbone.forward_features(images)  # [B, F, h, w]
        heat = self.heat_head(feats)[:, 0]
        if self.pool == "attention":  # the class sees the features where the heat head looks
            w = heat.flatten(1).softmax(1).to(feats.dtype)
            pooled = torch.einsum("bfn,bn->bf", feats.flatten(2), w)
        else:
            pooled = feats.mean((2, 3))
        return self.classifier(pooled), torch.sigmoid(self.point_head(pooled)), heat

    def heat_size(self, image_size: int) -> tuple[int, int]:
        with torch.no_grad():
            was = self.training
            self.eval()
            h, w = self.backbone.forward_features(torch.zeros(1, 3, image_size, image_size)).shape[-2:]
            self.train(was)
        return int(h), int(w)


def load_backbone(backbone: nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--pretrained-path {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if len(missing) > len(state) // 2:
        raise ValueError(f"--pretrained-path {p} does not fit the backbone: {len(missing)} missing keys, e.g. "
                         f"{missing[:3]}")
