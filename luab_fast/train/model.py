"""A timm backbone with the class head and the two byproduct heads of LUAB.

``forward(images)`` → ``(logits [B, C], point [B, 2], heat [B, h, w])``: the click point in crop coordinates
(sigmoid, from the pooled features) and attention logits over the last feature map (a 1×1 convolution;
h × w = image_size / output_stride). ``pool="attention"`` pools the features for the class and point heads
with the softmax of the heat logits instead of the mean: trained on the annotators' traces (LUAB), the heat
head then steers the classifier to where people looked.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .._cli import DataError
from .checkpoint import describe, what_it_holds


class LUABModel(nn.Module):
    def __init__(self, backbone: str, num_classes: int, output_stride: int = 32,
                 pretrained_path: Optional[str] = None, pool: str = "avg", image_size: Optional[int] = None,
                 drop: float = 0.0, drop_path: float = 0.0, model_kwargs: Optional[dict[str, Any]] = None,
                 pretrained: bool = False, pretrained_file: Optional[str] = None) -> None:
        super().__init__()
        if pool not in ("avg", "attention"):
            raise ValueError(f"--pool must be avg or attention, got {pool!r}")
        self.pool = pool
        extra = dict(model_kwargs or {})
        if drop_path:
            extra["drop_path_rate"] = drop_path
        self.backbone = _create_backbone(backbone, output_stride, image_size, extra, pretrained, pretrained_file)
        source_head = load_backbone(self.backbone, pretrained_path) if pretrained_path else None
        width = self.backbone.num_features
        # timm's drop_rate is the dropout before its classifier, which forward_features never reaches: ours is
        # the same dropout before our class head
        self.head_drop = nn.Dropout(drop)
        self.classifier = nn.Linear(width, num_classes)
        self.point_head = nn.Linear(width, 2)
        self.heat_head = nn.Conv2d(width, 1, kernel_size=1)
        if source_head:
            load_classifier(self.classifier, source_head, f"--pretrained-path {pretrained_path}")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map as [B, F, h, w], whatever layout it returns: NCHW (CNNs), NHWC
        (timm's Swin and other ``output_fmt='NHWC'`` models) or tokens [B, prefix + h·w, F] (ViTs)."""
        feats = self.backbone.forward_features(images)
        if feats.dim() == 3:  # tokens: drop class/register tokens, lay the patches out on their grid
            tokens = feats[:, getattr(self.backbone, "num_prefix_tokens", 0):]
            h, w = _token_grid(self.backbone, images, tokens.shape[1])
            return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)
        if getattr(self.backbone, "output_fmt", "NCHW") == "NHWC":
            return feats.permute(0, 3, 1, 2)
        return feats

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.features(images)  # [B, F, h, w]
        heat = self.heat_head(feats)[:, 0]
        if self.pool == "attention":  # the class sees the features where the heat head looks
            w = heat.flatten(1).softmax(1).to(feats.dtype)
            pooled = torch.einsum("bfn,bn->bf", feats.flatten(2), w)
        else:
            pooled = feats.mean((2, 3))
        return self.classifier(self.head_drop(pooled)), torch.sigmoid(self.point_head(pooled)), heat

    # what timm's create_optimizer_v2 asks a model: the names kept from weight decay, the layers of --layer-decay
    def no_weight_decay(self) -> set[str]:
        inner = getattr(self.backbone, "no_weight_decay", None)
        return {f"backbone.{n}" for n in inner()} if inner else set()

    def group_matcher(self, coarse: bool = False) -> Callable[[str], float]:
        """The backbone's layers (timm's own grouping of it, bottom up), the heads above the top one."""
        from timm.models import group_parameters

        inner = getattr(self.backbone, "group_matcher", None)
        layers = group_parameters(self.backbone, inner(coarse=coarse), reverse=True) if inner else {}

        def layer(name: str) -> float:
            return layers.get(name.removeprefix("backbone."), math.inf) if name.startswith("backbone.") else math.inf
        return layer

    def heat_size(self, image_size: int) -> tuple[int, int]:
        """(h, w) of the heat map for ``image_size`` crops: the heat targets must be rasterised at this size."""
        with torch.no_grad():
            was = self.training
            self.eval()
            p = next(self.parameters())
            h, w = self.features(torch.zeros(1, 3, image_size, image_size, device=p.device)).shape[-2:]
            self.train(was)
        return int(h), int(w)


def _create_backbone(name: str, output_stride: int, image_size: Optional[int],
                     extra: Optional[dict[str, Any]] = None, pretrained: bool = False,
                     pretrained_file: Optional[str] = None) -> nn.Module:
    """timm backbone without pooling or classifier. ``output_stride`` goes to the models that take it (ResNets,
    ConvNeXts, ...; ViTs have their patch size), ``img_size`` to those that fix their input size (ViTs, Swin);
    ``extra`` (--drop-path, --model-kwargs) to every try: a model that does not take one is an error.
    ``pretrained``: timm's own weights of the model (its classifier dropped), from ``pretrained_file`` when given
    (timm's ``pretrained_cfg_overlay=dict(file=...)``), else from the hub."""
    extra = dict(extra or {})
    if pretrained:
        return _pretrained_backbone(name, output_stride, image_size, extra, pretrained_file)
    return _try_create(name, output_stride, image_size, extra)


# seconds a socket of the hub download may stay silent: without network access --pretrained fails, not hangs
HUB_TIMEOUT = 30.0


def _pretrained_backbone(name: str, output_stride: int, image_size: Optional[int], extra: dict[str, Any],
                         pretrained_file: Optional[str]) -> nn.Module:
    import socket

    what = f"--pretrained-file {pretrained_file}" if pretrained_file else "--pretrained"
    if pretrained_file:
        p = Path(pretrained_file)
        if not p.is_file():
            raise ValueError(f"--pretrained-file {p} " + ("is a directory, expected a weights file" if p.exists()
                                                          else "does not exist"))
        extra["pretrained_cfg_overlay"] = dict(file=str(p))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(HUB_TIMEOUT)
    try:
        return _try_create(name, output_stride, image_size, extra, pretrained=True)
    except (ValueError, DataError):
        raise
    except Exception as exc:  # timm's strict load (mismatches), the hub (no network), a file that is no weights
        if pretrained_file:
            raise DataError(f"{what}: cannot load it as {name}'s pretrained weights ({_mismatch(exc)})") from None
        raise DataError(f"--pretrained: cannot get timm's pretrained weights of {name} ({describe(exc)}); without "
                        f"network access, download them elsewhere and give --pretrained-file FILE, or give "
                        f"--pretrained-path FILE") from None
    finally:
        socket.setdefaulttimeout(previous)


def _mismatch(exc: BaseException) -> str:
    """``describe(exc)``, or for load_state_dict's error the tensors it names (missing, unexpected, misshapen)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if isinstance(exc, RuntimeError) and len(lines) > 1 and "loading state_dict" in lines[0]:
        return "; ".join(ln[:300] for ln in lines[1:4])
    return describe(exc)


def _try_create(name: str, output_stride: int, image_size: Optional[int], extra: dict[str, Any],
                pretrained: bool = False) -> nn.Module:
    import timm

    optional = {}
    if output_stride != 32:
        optional["output_stride"] = output_stride
    if image_size is not None:
        optional["img_size"] = image_size
    tries = [optional] + [{k: v for k, v in optional.items() if k != drop} for drop in optional] + [{}]
    for kwargs in tries:  # drop the options a model's constructor does not take
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="", **kwargs, **extra)
        except TypeError as exc:
            last: Exception = exc
        except AssertionError:  # timm asserts on the output strides a model cannot give
            raise ValueError(f"--output-stride {output_stride} is not one {name} can give; "
                             f"CNNs such as ResNets take 8, 16 or 32") from None
        except (RuntimeError, ValueError) as exc:  # an unknown name, an unusable combination
            if pretrained and timm.is_model(name):  # the weights did not load: --pretrained's message says so
                raise
            raise ValueError(f"--model {name!r}: {exc} (timm.list_models() lists the names)") from exc
    if extra:
        raise ValueError(f"--model {name!r} does not take one of {sorted(extra)} (--drop-path, --model-kwargs): "
                         f"{last}")
    raise ValueError(f"--model {name!r}: {last}")


def _token_grid(backbone: nn.Module, images: torch.Tensor, n: int) -> tuple[int, int]:
    grid = getattr(getattr(backbone, "patch_embed", None), "grid_size", None)
    if grid is not None and grid[0] * grid[1] == n:
        return int(grid[0]), int(grid[1])
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"cannot lay {n} tokens of the backbone out on a grid for a {tuple(images.shape[-2:])} input")
    return side, side


def read_state_dict(path: str, option: str = "--pretrained-path") -> dict[str, torch.Tensor]:
    """A state dict file (.pt/.pth/.safetensors; also a checkpoint holding one under ``state_dict`` or ``model``);
    ``option`` names it in the messages."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{option} {p} " + ("is a directory, expected a weights file" if p.exists()
                                             else "does not exist"))
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)  # never runs code from the file
    except OSError:
        raise  # unreadable (permissions, I/O): the error policy names the file
    except Exception as exc:  # pickle, zip, safetensors header errors: all mean "not readable weights"
        raise DataError(f"{option} {p}: cannot read it as weights ({describe(exc)})") from None
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                           for k, v in state.items()):
        raise DataError(f"{option} {p} holds {what_it_holds(state)}, expected a state dict "
                        f"(parameter name → tensor; also under 'state_dict' or 'model')")
    return state


def classifier_prefix(backbone: nn.Module) -> str:
    """The name of a timm model's classifier (``pretrained_cfg['classifier']``: fc, head, head.fc, classifier)."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    name = cfg.get("classifier") or getattr(backbone, "default_cfg", {}).get("classifier") or "fc"
    return name[0] if isinstance(name, (list, tuple)) else name


def load_backbone(backbone: nn.Module, path: str, option: str = "--pretrained-path") -> Optional[dict[str, Any]]:
    """Loads a backbone state dict (.pt/.pth/.safetensors; also a checkpoint holding one under ``state_dict`` or
    ``model``, e.g. this trainer's ``last.pt``, whose ``backbone.`` prefix is dropped) or a whole timm model's.
    Missing or misshapen backbone tensors are named. Returns the source's classifier, ``{"name", "weight",
    "bias"}`` (a timm model's by its ``pretrained_cfg['classifier']``, this trainer's ``classifier``), or None:
    ``load_classifier`` puts it in the class head where it fits."""
    p = Path(path)
    state = read_state_dict(path, option)
    head = None
    if sum(k.startswith("backbone.") for k in state) > len(state) // 2:  # a LUABModel's own state dict
        head = _head(state, "classifier")
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    else:
        head = _head(state, classifier_prefix(backbone))
        if head is not None:
            state = {k: v for k, v in state.items() if k not in (f"{head['name']}.weight", f"{head['name']}.bias")}
    own = backbone.state_dict()
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    if wrong:
        raise DataError(f"{option} {p}: {len(wrong)} tensors have another shape than the backbone's "
                        f"(weights of another architecture?), e.g. {wrong[:3]}")
    missing, _ = backbone.load_state_dict(state, strict=False)
    if len(missing) > len(own) // 2:
        raise DataError(f"{option} {p} does not fit the backbone: {len(missing)} of its {len(own)} "
                        f"tensors missing, e.g. {missing[:3]}")
    if missing:
        warnings.warn(f"{option} {p}: {len(missing)} of the backbone's {len(own)} tensors are not in "
                      f"the file and keep their random initialisation, e.g. {missing[:3]}", stacklevel=2)
    return head


def _head(state: dict[str, torch.Tensor], name: str) -> Optional[dict[str, Any]]:
    weight = state.get(f"{name}.weight")
    if weight is None or weight.dim() != 2:  # no linear classifier under that name (a 1x1 conv head: skipped)
        return None
    return {"name": name, "weight": weight, "bias": state.get(f"{name}.bias")}


def classifier_fits(classifier: nn.Linear, head: dict[str, Any]) -> bool:
    bias = head["bias"]
    return head["weight"].shape == classifier.weight.shape and (bias is None or bias.shape == classifier.bias.shape)


def load_classifier(classifier: nn.Linear, head: dict[str, Any], where: str) -> bool:
    """The source model's classifier ``head`` into ``classifier`` when [classes, features] fits; else skipped
    (the class head keeps its initialisation) with a warning naming the tensor and both shapes."""
    weight, bias = head["weight"], head["bias"]
    if not classifier_fits(classifier, head):
        warnings.warn(f"{where}: its classifier {head['name']}.weight {tuple(weight.shape)} does not fit the "
                      f"class head [classes, features] {tuple(classifier.weight.shape)}: skipped, the class head "
                      f"starts from its random initialisation", stacklevel=3)
        return False
    with torch.no_grad():
        classifier.weight.copy_(weight)
        if bias is not None:
            classifier.bias.copy_(bias)
    return True
