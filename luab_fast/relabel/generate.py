"""Generate ReLabel label maps for any image folder (the release's generator was never published).

A classifier runs fully-convolutionally over each whole image squashed to its input size (no crop, aspect
ratio not kept, as ReLabel did with ``Resize((475, 475))``): the global pool is removed and the head is
applied at every location of the last feature map — for a linear classifier exactly a 1×1 convolution — and
the top-k classes per location are written as ``DST/<wnid>/<stem>.pt``, ``Tensor[2, k, S, S]`` float32
(scores, then class indices as floats), the release format, each file atomically.

Implementation: the feature map ``[B, C, S, S]`` is reshaped to ``[B·S·S, C, 1, 1]`` and passed through the
model's own ``forward_head``; pooling a 1×1 map is the identity, so the head (plain ``fc``, or timm's
norm + MLP heads) acts per location with the trained weights and no per-architecture code.

Scores: ``"logits"`` (default) as in the release, whose scores are raw logits (LabelPooling applies the softmax
after pooling); ``"softmax"`` stores per-location probabilities instead. The top-k is the same either way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from .._atomic import atomic_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def load_model(model: str, arch: str | None = None) -> Any:
    """A timm model in eval mode, offline: a timm name (random weights, ``pretrained=False``) or a checkpoint
    path (a state dict, or a dict with ``state_dict``/``model`` and ``arch`` as timm's train script saves;
    ``arch`` names the architecture when the checkpoint does not; or this trainer's checkpoint, which names its
    own). Loaded with ``weights_only=True``."""
    import timm
    import torch

    path = Path(model)
    if not path.is_file():
        if path.suffix in {".pth", ".pt", ".bin", ".safetensors"} or os.sep in model:
            raise ValueError(f"model checkpoint {model} does not exist")
        if not timm.is_model(model):
            raise ValueError(f"model must be a timm model name or a checkpoint path, got {model!r}")
        return timm.create_model(model, pretrained=False).eval()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        ckpt: Any = load_file(str(path))
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("run"), dict) and isinstance(ckpt.get("model"), dict):
        # this trainer's checkpoint (last.pt, model_best.pt): rebuilt as it was trained (its output stride
        # and classes included) — a plain timm model of the same name would see other feature maps
        from ..evaluate.models import from_checkpoint

        return from_checkpoint(path, ema=False, image_size=None, class_map=None).module.eval()
    arch = arch or (ckpt.get("arch") if isinstance(ckpt, dict) else None)
    if not arch:
        raise ValueError(f"{path} does not name its architecture; pass arch= (--arch) with a timm model name")
    state = ckpt
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            state = ckpt[key]
            break
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = timm.create_model(arch, pretrained=False)
    fc = net.pretrained_cfg.get("classifier")
    if fc and f"{fc}.weight" in state:
        net.reset_classifier(state[f"{fc}.weight"].shape[0])
    net.load_state_dict(state)
    return net.eval()


def dense_scores(net: Any, x) -> Any:
    """``Tensor[B, num_classes, S, S]`` head outputs at every location of ``net``'s last feature map."""
    import torch

    from ..train.model import LUABModel

    if isinstance(net, LUABModel):  # this trainer's model: its linear classifier at every location
        w, b = net.classifier.weight, net.classifier.bias
        return torch.einsum("bfhw,cf->bchw", net.features(x), w) + b[None, :, None, None]
    f = net.forward_features(x)
    if f.ndim != 4:
        raise ValueError(f"the model's forward_features must return a [B, C, H, W] map (a convolutional model), "
                         f"got shape {tuple(f.shape)}")
    b, c, h, w = f.shape
    flat = f.permute(0, 2, 3, 1).reshape(b * h * w, c, 1, 1)
    out = net.forward_head(flat)  # pooling a 1x1 map is the identity: the head acts per location
    return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def list_images(images: Path) -> list[Path]:
    return sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _out_path(img: Path, images: Path, out: Path) -> Path:
    """``out/<wnid>/<stem>.pt`` with ``<wnid>`` the image's folder (``unlabeled`` for loose images)."""
    wnid = img.parent.name if img.parent != images else "unlabeled"
    return out / wnid / f"{img.name.split('.', 1)[0]}.pt"


def _save_atomic(t, path: Path) -> None:
    """``torch.save`` through a unique temporary renamed into place (umask's mode, never a torn file)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(t, tmp)


def _batches(files: list[Path], size: int, batch_size: int, mean, std) -> Iterator[tuple[list[Path], Any]]:
    import torch
    from PIL import Image

    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    for lo in range(0, len(files), batch_size):
        part = files[lo:lo + batch_size]
        xs = []
        for p in part:
            with Image.open(p) as im:
                im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, 3)
            xs.append((x.permute(2, 0, 1).float() / 255 - m) / s)
        yield part, torch.stack(xs)


def generate_label_maps(model: str | Any, images: str | os.PathLike, out: str | os.PathLike, topk: int = 5,
                        size: int | None = None, scores: str = "logits", batch_size: int = 16,
                        device: Any = None, arch: str | None = None, progress: bool = True) -> int:
    """Writes ``out/<wnid>/<stem>.pt`` (``Tensor[2, topk, S, S]`` float32) for every image under ``images``;
    returns the number of files written. ``model``: timm name, checkpoint path or an ``nn.Module`` with
    timm's ``forward_features``/``forward_head``. ``size``: input side in pixels (default: the model's input
    size; ReLabel used 475 → a 15×15 map)."""
    import torch
    from tqdm.auto import tqdm

    if scores not in ("logits", "softmax"):
        raise ValueError(f"scores must be 'logits' or 'softmax', got {scores!r}")
    for name, v, lo in (("topk", topk, 1), ("batch_size", batch_size, 1), ("size", size, 1)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    images, out = Path(images), Path(out)
    if not images.is_dir():
        raise ValueError(f"images must be a directory, got {images}")
    net = load_model(model, arch) if isinstance(model, (str, os.PathLike)) else model.eval()
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    size = size or int(cfg.get("input_size", (3, 224, 224))[-1])
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = net.to(device)
    files = list_images(images)
    if not files:
        raise ValueError(f"no images under {images} (looked for {sorted(IMAGE_SUFFIXES)})")
    bar = tqdm(total=len(files), unit="img", desc=f"label maps {images.name}", disable=not progress)
    n = 0
    with torch.inference_mode():
        for part, x in _batches(files, size, batch_size, mean, std):
            y = dense_scores(net, x.to(device)).float()  # fp32: the stored scores are float32
            if topk > y.shape[1]:
                raise ValueError(f"topk must be at most the model's {y.shape[1]} classes, got {topk}")
            if scores == "softmax":
                y = y.softmax(dim=1)
            val, idx = y.topk(topk, dim=1)  # sorted descending: rank 0 is the top-1 class
            maps = torch.stack([val, idx.float()], dim=1).cpu()  # [B, 2, k, S, S]
            for p, m in zip(part, maps):
                _save_atomic(m.clone(), _out_path(p, images, out))
                n += 1
            bar.update(len(part))
    bar.close()
    return n
