"""Generator version 2's persons: pedestrians with a head, a torso and two legs, standing on the sidewalks.

Version 1 drew each person as one ellipse about 3×10 pixels at 80×160: under one cell of a stride-4 segmentation
head, so even a model trained with target labels did not learn the class. Here a pedestrian is about as tall as a
car at the same depth is wide (as in the street), several stand on the sidewalks and some walk in groups, so the
class is learnable from shape while staying a thin thing class. Their geometry and colours are drawn from the same
distributions in both domains (only their number differs, like the other layout statistics): the domain gap of
persons is the global and per-class appearance gap that every class has, never a colour that identifies the class
in one domain only.
"""

from __future__ import annotations

import colorsys

import numpy as np

HEIGHT_FRAC = (0.12, 0.17)  # pedestrian height / image width, times 0.3 + depth (0 at the horizon, 1 at the bottom)
GROUP_P = 0.3  # chance that a pedestrian walks with one or two companions beside it
HEAD, TORSO, LEGS = 1, 2, 3  # part ids of the `parts` map (0: not a pedestrian)


def place_pedestrians(label: np.ndarray, inst: np.ndarray, parts: np.ndarray, on: int, kind: int,
                      count: tuple[int, int], horizon: int, next_inst: int,
                      rng: np.random.Generator) -> int:  # fmt: skip
    """Draw pedestrians (label `kind`) standing on label `on`, far ones first; returns the next free instance id."""
    h, w = label.shape
    ys, xs = np.nonzero(label == on)
    if len(ys) == 0:
        return next_inst
    people = []
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        j = rng.integers(len(ys))
        people += _group(float(ys[j]), float(xs[j]), (ys[j] - horizon) / max(h - horizon, 1), w, rng)
    for foot_y, foot_x, height in sorted(people):  # nearer (lower) pedestrians occlude farther ones
        _draw(label, inst, parts, foot_y, foot_x, height, kind, next_inst, rng)
        next_inst += 1
    return next_inst


def _group(foot_y: float, foot_x: float, depth: float, width: int,
           rng: np.random.Generator) -> list[tuple[float, float, float]]:  # fmt: skip
    """(foot row, foot column, height) of one pedestrian and of its companions, side by side at the same depth."""
    height = rng.uniform(*HEIGHT_FRAC) * width * (0.3 + depth)
    size = 1 + (int(rng.integers(1, 3)) if rng.random() < GROUP_P else 0)
    side = 1.0 if rng.random() < 0.5 else -1.0
    out = []
    for k in range(size):
        step = k * height * rng.uniform(0.3, 0.45)  # shoulder to shoulder, sometimes overlapping
        out.append((foot_y + k * rng.uniform(-0.5, 0.5), foot_x + side * step, height * rng.uniform(0.9, 1.1)))
    return out


def _draw(label: np.ndarray, inst: np.ndarray, parts: np.ndarray, foot_y: float, foot_x: float, height: float,
          kind: int, inst_id: int, rng: np.random.Generator) -> None:  # fmt: skip
    """One pedestrian in its bounding window: a round head, a torso as wide as the shoulders, two legs that spread
    with the gait (the gap between them is background, so the class stays thin)."""
    h, w = label.shape
    top = foot_y - height
    shoulder = height * rng.uniform(0.28, 0.36)
    gait = height * rng.uniform(0.0, 0.2)  # how far the feet are apart beyond the hips
    r0, r1 = max(int(np.floor(top)), 0), min(int(np.ceil(foot_y)) + 1, h)
    c0, c1 = max(int(np.floor(foot_x - height / 2)), 0), min(int(np.ceil(foot_x + height / 2)) + 1, w)
    if r0 >= r1 or c0 >= c1:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    v = (yy - top) / height  # 0 at the top of the head, 1 at the feet
    dx = xx - foot_x
    head_r = 0.09 * height
    head = dx**2 + (yy - (top + head_r)) ** 2 <= head_r**2 + 0.25
    torso = (v >= 0.15) & (v < 0.56) & (np.abs(dx) <= shoulder / 2 * (1 - 0.15 * (v - 0.15) / 0.41))
    spread = shoulder * 0.22 + gait * np.clip((v - 0.56) / 0.44, 0, 1) / 2  # leg centre's distance from the middle
    leg_half = max(shoulder * 0.22, 0.5)
    legs = (v >= 0.56) & (yy <= foot_y + 0.5) & (np.abs(np.abs(dx) - spread) <= leg_half)
    for part, mask in ((LEGS, legs), (TORSO, torso), (HEAD, head)):
        label[r0:r1, c0:c1][mask] = kind
        inst[r0:r1, c0:c1][mask] = inst_id
        parts[r0:r1, c0:c1][mask] = part


def dress(img: np.ndarray, parts: np.ndarray, inst: np.ndarray, rng: np.random.Generator) -> None:
    """Skin-toned heads and dark trousers, one of each per pedestrian, drawn the same way in both domains; the torso
    keeps the thing colour it was painted with (its own colour when instance colours vary)."""
    n = int(inst.max()) + 1
    skin = _hsv(rng.uniform(0.02, 0.1, n), rng.uniform(0.25, 0.6, n), rng.uniform(0.3, 0.95, n))
    trousers = _hsv(rng.uniform(0, 1, n), rng.uniform(0.0, 0.5, n), rng.uniform(0.1, 0.45, n))
    for part, colours in ((HEAD, skin), (LEGS, trousers)):
        m = parts == part
        img[m] = colours[inst[m]]


def _hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.asarray([colorsys.hsv_to_rgb(*c) for c in zip(h, s, v)], dtype=np.float32) * 255.0
