"""Training augmentation drawn on the host per (seed, epoch, rank, batch), like the crop windows: timm's
RandAugment / AutoAugment (``--aa``), colour jitter, random erasing.

The spec strings are timm's: this module builds timm's own transform objects (``rand_augment_transform``,
``auto_augment_transform``) and reads their ops' names, probabilities and magnitudes, so the op set, policies
and magnitudes are timm's. The parameters are drawn here, with the loader's seeded ``numpy`` Generator, not by
calling those objects: timm draws from Python's global ``random`` (not reproducible per batch, not shared by
two decode backends) and applies each op to a PIL image on the host, where the geometric ops must also move
the click points and traces (augment_targets.py) and the photometric ones run batched on the device
(augment_ops.py: torch, for the torchvision backend) or in the DALI pipeline (augment_dali.py).

Geometric ops (Rotate, ShearX/Y, TranslateX/Y(Rel)) of one sample compose into one affine, applied first;
its photometric ops follow in their drawn order. timm applies them in the drawn order, so where a photometric
op came before a geometric one, timm leaves the fill untouched and this module does not: the only difference,
and only on the fill pixels (the other ops act pixel by pixel or, for autocontrast, equalize and contrast,
through image statistics the fill shifts a little).

Coordinates: crop-normalised ``(u, v)`` in [0, 1]² (after the flip; docs/architecture.md). ``inverse`` maps an
output point to the input point it samples (PIL's and DALI's ``warp_affine`` convention); ``forward`` maps a
point of the crop to where it appears in the output (for the targets).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .._cli import UsageError

GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel")
PHOTOMETRIC = ("AutoContrast", "Equalize", "Invert", "Posterize", "PosterizeIncreasing", "PosterizeOriginal",
               "Solarize", "SolarizeIncreasing", "SolarizeAdd", "Color", "ColorIncreasing", "Contrast",
               "ContrastIncreasing", "Brightness", "BrightnessIncreasing", "Sharpness", "SharpnessIncreasing")
# timm's level → argument maps whose sign timm draws with Python's ``random`` (_randomly_negate): this module
# takes timm's absolute value and draws the sign itself (the "Increasing" enhance ops: 1 ± the level, below)
_NEGATED = frozenset(GEOMETRIC)
_ENHANCE_INCREASING = frozenset({"ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                                 "SharpnessIncreasing"})
MEAN_FILL = (124, 116, 104)  # timm's fill for the geometric ops: round(255 · ImageNet mean)
REMODES = ("const", "rand", "pixel")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
RE_AREA = (0.02, 1 / 3)  # timm's RandomErasing defaults: erased area fraction and aspect
RE_ASPECT = (0.3, 1 / 0.3)
JITTER_OPS = ("Brightness", "Contrast", "Color")  # ColorJitter's 0, 1, 2 (saturation = PIL's Color)


@dataclass(frozen=True)
class Op:
    """One timm AugmentOp: its name, probability, magnitude and magnitude noise."""

    name: str
    prob: float
    magnitude: float
    magnitude_std: float = 0.0
    magnitude_max: Optional[float] = None


@dataclass(frozen=True)
class Policy:
    """``kind`` "rand": ``layers`` ops drawn from ``ops`` per image (with replacement, or by ``weights`` without);
    "auto": one of ``subpolicies`` per image, all its ops in order."""

    kind: str
    ops: tuple[Op, ...] = ()
    layers: int = 0
    weights: Optional[tuple[float, ...]] = None
    subpolicies: tuple[tuple[Op, ...], ...] = ()
    hparams: dict = field(default_factory=dict)

    @property
    def geometric(self) -> bool:
        ops = self.ops or tuple(op for sub in self.subpolicies for op in sub)
        return any(op.name in GEOMETRIC for op in ops)


def parse_aa(spec: str, image_size: int, interpolation: str = "bilinear") -> Policy:
    """timm's ``--aa`` spec → a :class:`Policy`, read off the objects timm builds from it (with the hparams of
    timm's ``create_transform``: translate_const = 45% of the image side, fill = the ImageNet mean)."""
    from timm.data import auto_augment as taa

    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"--aa: expected a timm augmentation spec such as rand-m9-mstd0.5-inc1, original or v0, "
                         f"got {spec!r}")
    if spec.startswith("augmix"):
        raise UsageError(f"--aa: AugMix ({spec!r}) blends several augmented copies of an image, which no single "
                         f"affine can carry to the traces; use rand-... or an AutoAugment policy")
    if spec.split("-")[0] == "trivial":
        raise UsageError("--aa: timm has no TrivialAugment spec ('trivial'); timm's nearest is RandAugment with "
                         "one op and uniform magnitude, e.g. rand-n1-m10-mstd101")
    hparams = dict(translate_const=int(image_size * 0.45), img_mean=MEAN_FILL)
    hparams["interpolation"] = interpolation  # (read by the ops' kwargs only, which are not used here)
    if spec.startswith("rand"):
        _check_rand_sections(spec)
    try:
        if spec.startswith("rand"):
            t = taa.rand_augment_transform(spec, dict(hparams))
            weights = None if t.choice_weights is None else tuple(float(w) for w in t.choice_weights)
            policy = Policy("rand", tuple(_op(o) for o in t.ops), int(t.num_layers), weights, hparams=hparams)
        else:
            t = taa.auto_augment_transform(spec, dict(hparams))
            policy = Policy("auto", subpolicies=tuple(tuple(_op(o) for o in sub) for sub in t.policy),
                            hparams=hparams)
    except (AssertionError, KeyError, ValueError, IndexError) as e:  # timm asserts on a bad section or name
        raise UsageError(f"--aa: {spec!r} is not a timm RandAugment (rand-m9-n2-mstd0.5-inc1 ...) or AutoAugment "
                         f"(original, originalr, v0, v0r, 3a, each with -mstdX) spec ({type(e).__name__}: "
                         f"{e or 'unknown section'})") from None
    ops = policy.ops or tuple(op for sub in policy.subpolicies for op in sub)
    unsupported = sorted({op.name for op in ops} - set(GEOMETRIC) - set(PHOTOMETRIC))
    if unsupported:
        raise UsageError(f"--aa: {spec!r} uses timm ops this loader does not run: {', '.join(unsupported)}; "
                         f"supported: {', '.join(GEOMETRIC + PHOTOMETRIC)}")
    if policy.kind == "rand" and not 0 <= policy.layers <= 16:
        raise UsageError(f"--aa: expected n (ops per image) in 0..16, got {policy.layers} in {spec!r}")
    return policy


def _check_rand_sections(spec: str) -> None:
    """timm skips a section it cannot split ('m', 'x9'); a typo would silently mean the default: refuse it."""
    for section in spec.split("-")[1:]:
        if section.startswith("t"):
            continue
        key = re.split(r"(\d.*)", section)[0]
        if key not in ("m", "n", "p", "mstd", "mmax", "inc") or key == section:
            raise UsageError(f"--aa: unknown RandAugment section {section!r} in {spec!r} (expected m<int>, "
                             f"n<int>, p<float>, mstd<float>, mmax<int>, inc<0|1>, t<name>)")


def _op(o) -> Op:
    mmax = o.magnitude_max
    return Op(o.name, float(o.prob), float(o.magnitude), float(o.magnitude_std),
              None if mmax is None else float(mmax))


def level_arg(name: str, magnitude: np.ndarray, sign: np.ndarray, hparams: dict) -> np.ndarray:
    """float64 [B]: timm's op argument at each magnitude (timm's own level function, per sample), with the
    sign drawn here where timm draws it with Python's ``random``."""
    from timm.data.auto_augment import LEVEL_TO_ARG

    fn = LEVEL_TO_ARG[name]
    if fn is None:
        return np.zeros(len(magnitude))
    if name in _ENHANCE_INCREASING:  # timm: max(0.1, 1 ± level·0.9/10), the ± from random
        return np.maximum(0.1, 1.0 + sign * magnitude / 10.0 * 0.9)
    values = np.array([float(fn(float(m), hparams)[0]) for m in magnitude])
    return np.abs(values) * sign if name in _NEGATED else values


def op_inverse(name: str, arg: np.ndarray, image_size: int) -> np.ndarray:
    """float64 [B, 3, 3]: timm's geometric op (PIL's output → input affine) in crop-normalised coordinates."""
    B = len(arg)
    m = np.tile(np.eye(3), (B, 1, 1))
    if name == "ShearX":  # PIL data (1, f, 0, 0, 1, 0): x_in = x + f·y (same in normalised units: square image)
        m[:, 0, 1] = arg
    elif name == "ShearY":
        m[:, 1, 0] = arg
    elif name in ("TranslateXRel", "TranslateYRel"):  # pct of the side
        m[:, 0 if name.startswith("TranslateX") else 1, 2] = arg
    elif name in ("TranslateX", "TranslateY"):  # pixels of the output
        m[:, 0 if name == "TranslateX" else 1, 2] = arg / image_size
    elif name == "Rotate":  # PIL Image.rotate(deg): counter-clockwise on screen, about the centre
        a = np.radians(arg)
        c, s = np.cos(a), np.sin(a)
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c  # in = R (out − centre) + centre
        m[:, 0, 2] = 0.5 - c * 0.5 + s * 0.5
        m[:, 1, 2] = 0.5 - s * 0.5 - c * 0.5
    else:
        raise ValueError(f"not a geometric op: {name!r}")
    return m


@dataclass
class AugmentParams:
    """One batch's draws (host arrays)."""

    inverse: Optional[np.ndarray]  # float64 [B, 3, 3] output → input, crop-normalised; None: no geometry
    photo: list  # per layer: (names object [B] ('' = none), args float64 [B]); colour jitter: 3 more layers
    erase: Optional[np.ndarray]  # int64 [B, K, 4] (top, left, h, w), h = 0 for none
    erase_seed: int = 0

    @property
    def has_photo(self) -> bool:
        return any((names != "").any() for names, _ in self.photo)

    @property
    def forward(self) -> Optional[np.ndarray]:
        """float32 [B, 2, 3]: input → output, crop-normalised (for points and traces)."""
        if self.inverse is None:
            return None
        return np.linalg.inv(self.inverse)[:, :2].astype(np.float32)

    def pixel_inverse(self, size: int) -> Optional[np.ndarray]:
        """float32 [B, 2, 3]: output → input in pixel units of a ``size``² image (PIL / DALI ``warp_affine``)."""
        if self.inverse is None:
            return None
        m = self.inverse[:, :2].copy()
        m[:, :, 2] *= size
        return m.astype(np.float32)


@dataclass(frozen=True)
class Augment:
    """The training augmentation of a run; :meth:`draw` gives a batch's parameters."""

    image_size: int
    policy: Optional[Policy] = None
    color_jitter: float = 0.0
    reprob: float = 0.0
    remode: str = "pixel"
    recount: int = 1

    @property
    def geometric(self) -> bool:
        return self.policy is not None and self.policy.geometric

    @property
    def photometric(self) -> bool:
        return self.policy is not None or self.color_jitter > 0

    @property
    def active(self) -> bool:
        return self.photometric or self.reprob > 0

    @property
    def jitter(self) -> bool:
        """timm's create_transform turns colour jitter off under --aa (but for the 3a policies, whose Desaturate
        / GaussianBlur ops this loader refuses)."""
        return self.color_jitter > 0 and self.policy is None

    @property
    def photo_layers(self) -> int:
        """The most photometric layers a batch's draw holds (the DALI pipeline feeds this many)."""
        p = self.policy
        depth = 0 if p is None else p.layers if p.kind == "rand" else max(len(s) for s in p.subpolicies)
        return depth + (3 if self.jitter else 0)

    def draw(self, rng: np.random.Generator, n: int) -> AugmentParams:
        inverse, photo = self._draw_policy(rng, n) if self.policy is not None else (None, [])
        if self.jitter:  # torchvision's ColorJitter (b, c, s): each factor ~U[1 − f, 1 + f], a random order
            order = np.argsort(rng.random((n, 3)), axis=1)
            factors = rng.uniform(max(0.0, 1.0 - self.color_jitter), 1.0 + self.color_jitter, (n, 3))
            for position in range(3):
                k = order[:, position]
                photo.append((np.array(JITTER_OPS, dtype=object)[k], factors[np.arange(n), k]))
        erase = self._draw_erase(rng, n) if self.reprob > 0 else None
        seed = int(rng.integers(2 ** 62)) if erase is not None else 0
        return AugmentParams(inverse, photo, erase, seed)

    def _draw_policy(self, rng: np.random.Generator, n: int):
        p = self.policy
        if p.kind == "rand":
            k = len(p.ops)
            if p.weights is None:
                picks = rng.integers(0, k, (n, p.layers))
            else:  # timm: np.random.choice(ops, n, replace=False, p=weights)
                picks = np.stack([rng.choice(k, p.layers, replace=False, p=p.weights) for _ in range(n)]) \
                    if p.layers else np.zeros((n, 0), np.int64)
            chosen = [[p.ops[j] for j in row] for row in picks]
        else:
            chosen = [list(p.subpolicies[j]) for j in rng.integers(0, len(p.subpolicies), n)]
        depth = max((len(c) for c in chosen), default=0)
        inverse = np.tile(np.eye(3), (n, 1, 1)) if p.geometric else None
        photo = []
        for layer in range(depth):
            ops = [c[layer] if layer < len(c) else None for c in chosen]
            applied = rng.random(n)
            noise_n, noise_u, sign = rng.standard_normal(n), rng.random(n), np.where(rng.random(n) > 0.5, -1.0, 1.0)
            names = np.full(n, "", dtype=object)
            args = np.zeros(n)
            for name in sorted({o.name for o in ops if o is not None}):
                idx = np.array([i for i, o in enumerate(ops) if o is not None and o.name == name])
                op = ops[idx[0]]
                on = idx[~((op.prob < 1.0) & (applied[idx] > op.prob))]  # timm: skip if random() > prob
                if not len(on):
                    continue
                m = np.full(len(on), op.magnitude)
                if op.magnitude_std == math.inf:
                    m = noise_u[on] * op.magnitude
                elif op.magnitude_std > 0:
                    m = op.magnitude + op.magnitude_std * noise_n[on]
                m = np.clip(m, 0.0, op.magnitude_max or 10.0)
                arg = level_arg(name, m, sign[on], p.hparams)
                if name in GEOMETRIC:
                    inverse[on] = inverse[on] @ op_inverse(name, arg, self.image_size)  # applied in layer order
                else:
                    names[on], args[on] = name, arg
            photo.append((names, args))
        if inverse is not None and (inverse == np.eye(3)).all():  # no geometric op drawn: targets as they are
            inverse = None
        return inverse, photo

    def _draw_erase(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """timm's RandomErasing per image: with ``reprob``, ``recount`` boxes of area fraction ~U(1/50, 1/3) /
        count and log-uniform aspect in [0.3, 1/0.3], 10 attempts each to fit (timm's ``w < W and h < H``)."""
        S, K, attempts = self.image_size, self.recount, 10
        out = np.zeros((n, K, 4), np.int64)
        on = rng.random(n) <= self.reprob  # timm: skip if random() > probability
        area = rng.uniform(*RE_AREA, (n, K, attempts)) * S * S / K
        aspect = np.exp(rng.uniform(math.log(RE_ASPECT[0]), math.log(RE_ASPECT[1]), (n, K, attempts)))
        h = np.round(np.sqrt(area * aspect)).astype(np.int64)
        w = np.round(np.sqrt(area / aspect)).astype(np.int64)
        fits = (w < S) & (h < S)
        first = np.argmax(fits, axis=2)
        found = np.take_along_axis(fits, first[..., None], 2)[..., 0] & on[:, None]
        h = np.take_along_axis(h, first[..., None], 2)[..., 0]
        w = np.take_along_axis(w, first[..., None], 2)[..., 0]
        u = rng.random((n, K, 2))
        out[..., 0] = np.floor(u[..., 0] * (S - h + 1))
        out[..., 1] = np.floor(u[..., 1] * (S - w + 1))
        out[..., 2], out[..., 3] = np.where(found, h, 0), np.where(found, w, 0)
        return out


def build_augment(image_size: int, aa: Optional[str] = None, color_jitter: float = 0.0, reprob: float = 0.0,
                  remode: str = "pixel", recount: int = 1, interpolation: str = "bilinear") -> Augment:
    """The run's :class:`Augment` from the command-line values; UsageError naming the flag on a bad one."""
    if interpolation not in INTERPOLATIONS:
        raise UsageError(f"--interpolation: expected one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if not (isinstance(color_jitter, (int, float)) and 0.0 <= color_jitter <= 1.0):
        raise UsageError(f"--color-jitter: expected a factor in [0, 1] (0: off), got {color_jitter!r}")
    if not (isinstance(reprob, (int, float)) and 0.0 <= reprob <= 1.0):
        raise UsageError(f"--reprob: expected a probability in [0, 1], got {reprob!r}")
    if remode not in REMODES:
        raise UsageError(f"--remode: expected one of {', '.join(REMODES)}, got {remode!r}")
    if not (isinstance(recount, int) and not isinstance(recount, bool) and 1 <= recount <= 16):
        raise UsageError(f"--recount: expected an int in 1..16 (boxes erased per image), got {recount!r}")
    policy = None if aa in (None, "", "none") else parse_aa(aa, image_size, interpolation)
    return Augment(image_size, policy, float(color_jitter), float(reprob), remode, recount)
