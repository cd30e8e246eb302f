"""The two toy domains' appearance and layout statistics.

The shift is built like the real GTA5→Cityscapes one: a *global* photometric gap (colour cast, contrast,
gamma, blur, sensor noise — what augmentation and image translation can bridge), *class-wise* appearance
changes (textures and hues that differ per class — what only target-aware adaptation can bridge) and a
*layout* shift (horizon height, object density and size).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DomainStyle:
    name: str
    # per-class base RGB colour, in train-id order (diga.data.labels.TOY_CLASSES)
    colors: tuple[tuple[int, int, int], ...]
    color_jitter: float  # per-instance colour jitter (± in 0..255 units)
    texture: tuple[float, ...]  # per-class texture amplitude
    texture_scale: tuple[float, ...]  # per-class texture period in pixels
    horizon: tuple[float, float]  # horizon row as fraction of height (uniform range)
    cars: tuple[int, int]  # number of cars (inclusive range)
    persons: tuple[int, int]  # generator version 1
    car_size: tuple[float, float]  # car width as a fraction of image width
    clutter: tuple[int, int]  # unlabeled (ignore) objects
    # global photometric transform applied after rendering
    channel_mix: tuple[tuple[float, float, float], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    blur_sigma: float = 0.0
    noise_std: float = 0.0
    vignette: float = 0.0
    pedestrians: tuple[int, int] = (0, 0)  # generator version 2: pedestrians (groups add one or two companions each)
    extra: dict = field(default_factory=dict)


SOURCE = DomainStyle(
    name="source",  # "synthetic": saturated flat colours, crisp edges, clean
    colors=(
        (90, 90, 100),
        (200, 170, 140),
        (170, 90, 70),
        (40, 160, 40),
        (110, 170, 250),
        (220, 30, 30),
        (250, 200, 40),
    ),
    color_jitter=18.0,
    texture=(6, 8, 14, 20, 3, 4, 4),
    texture_scale=(3, 4, 6, 3, 40, 8, 4),
    horizon=(0.30, 0.45),
    cars=(1, 4),
    persons=(0, 3),
    car_size=(0.10, 0.22),
    clutter=(0, 2),
    pedestrians=(2, 6),
)

TARGET = DomainStyle(
    name="target",  # "real": colour cast, low contrast, blur, noise, different textures and layout
    colors=(
        (110, 105, 95),
        (150, 150, 150),
        (120, 110, 120),
        (70, 120, 60),
        (190, 200, 210),
        (60, 70, 150),
        (200, 90, 160),
    ),
    color_jitter=22.0,
    texture=(14, 6, 24, 30, 6, 10, 8),
    texture_scale=(2, 6, 4, 2, 30, 5, 3),
    horizon=(0.38, 0.55),
    cars=(2, 6),
    persons=(1, 4),
    car_size=(0.07, 0.16),
    clutter=(1, 3),
    channel_mix=((0.85, 0.15, 0.05), (0.05, 0.85, 0.10), (0.10, 0.20, 0.75)),
    gamma=1.25,
    contrast=0.75,
    brightness=-8.0,
    blur_sigma=0.8,
    noise_std=7.0,
    vignette=0.35,
    pedestrians=(3, 7),
)

STYLES = {"source": SOURCE, "target": TARGET}
