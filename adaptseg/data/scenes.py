"""The synthetic benchmark's street scenes: layouts with all 19 Cityscapes classes, drawn far to
near, and the look of each domain (``adaptseg.data.synthetic`` writes them in the data sets'
layouts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from adaptseg.data.labels import PALETTE

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)
TARGET_PULL, TARGET_JITTER = 0.75, 0.1


def _derangement(rng: np.random.Generator) -> np.ndarray:
    """A permutation of the 19 classes with no fixed point (every class gets a partner)."""
    while True:
        order = rng.permutation(19)
        if not np.any(order == np.arange(19)):
            return order


@dataclass(frozen=True)
class Style:
    """What a domain looks like and how its scenes are laid out."""

    colours: np.ndarray  # (19, 3) in [0, 1]
    horizon: tuple[float, float]  # fraction of the height
    object_scale: tuple[float, float]
    cars: tuple[int, int]
    persons: tuple[int, int]
    pixel_noise: float
    texture: float
    blur: bool
    brightness: float
    contrast: float


def source_style() -> Style:
    colours = np.array(PALETTE, dtype=np.float64) / 255.0
    return Style(colours, (0.40, 0.50), (0.8, 1.2), (0, 3), (0, 2), 0.03, 0.0, False, 0.0, 1.0)


def target_style(pull: float = TARGET_PULL, jitter: float = TARGET_JITTER) -> Style:
    """Each class colour moves ``pull`` of the way towards another class's source colour (a
    fixed derangement), plus ``jitter`` x U(-1, 1) per channel."""
    rng = np.random.default_rng(20181802)
    source = source_style().colours
    partner = _derangement(rng)
    shift = rng.uniform(-1.0, 1.0, (19, 3))
    colours = np.clip(source + pull * (source[partner] - source) + jitter * shift, 0.0, 1.0)
    return Style(colours, (0.30, 0.55), (1.0, 1.5), (1, 5), (0, 4), 0.06, 0.08, True, -0.08, 0.8)


class Canvas:
    """A label map plus a per-pixel colour offset (objects vary a little in colour).

    Shapes are painted inside their clipped bounding box only, which keeps generation fast.
    """

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.label = np.full((height, width), SKY, dtype=np.uint8)
        self.offset = np.zeros((height, width, 3))
        self.rows, self.cols = np.mgrid[0:height, 0:width]

    def _box(self, top: float, bottom: float, left: float, right: float) -> tuple[slice, slice]:
        top, left = max(round(top), 0), max(round(left), 0)
        bottom = min(max(round(bottom), top + 1), self.height)
        right = min(max(round(right), left + 1), self.width)
        return slice(top, bottom), slice(left, right)

    def rect(self, top, bottom, left, right, cls: int, rng: np.random.Generator) -> None:
        box = self._box(top, bottom, left, right)
        self.label[box] = cls
        self.offset[box] = rng.normal(0.0, 0.04, 3)

    def ellipse(self, cy, cx, ry, rx, cls: int, rng: np.random.Generator) -> None:
        ry, rx = max(ry, 0.75), max(rx, 0.75)
        box = self._box(cy - ry, cy + ry + 1, cx - rx, cx + rx + 1)
        inside = ((self.rows[box] - cy) / ry) ** 2 + ((self.cols[box] - cx) / rx) ** 2 <= 1.0
        self.label[box][inside] = cls
        self.offset[box][inside] = rng.normal(0.0, 0.04, 3)


def _ground(canvas: Canvas, horizon: int, rng: np.random.Generator) -> Callable:
    """Road trapezoid to a vanishing point, sidewalks beside it, terrain or vegetation outside.

    Returns a function ``row -> (road_left, road_right, walk_width)`` for placing objects.
    """
    height, width = canvas.height, canvas.width
    vanish = width * rng.uniform(0.35, 0.65)
    half_bottom = width * rng.uniform(0.30, 0.45)
    walk_bottom = width * rng.uniform(0.10, 0.18)
    depth = np.clip((canvas.rows - horizon) / max(height - horizon, 1), 0.0, 1.0)
    below = canvas.rows >= horizon
    half, walk = depth * half_bottom, depth * walk_bottom
    distance = np.abs(canvas.cols - vanish)
    outside = rng.choice([VEGETATION, TERRAIN], size=2)
    left_side = canvas.cols < vanish
    canvas.label[below & left_side] = outside[0]
    canvas.label[below & ~left_side] = outside[1]
    canvas.label[below & (distance < half + walk)] = SIDEWALK
    canvas.label[below & (distance < half)] = ROAD

    def at(row: float) -> tuple[float, float, float]:
        d = np.clip((row - horizon) / max(height - horizon, 1), 0.0, 1.0)
        return vanish - d * half_bottom, vanish + d * half_bottom, d * walk_bottom

    return at


def _skyline(canvas: Canvas, horizon: int, rng: np.random.Generator) -> None:
    """Buildings along the horizon, a wall in front of some, trees here and there."""
    width, height = canvas.width, canvas.height
    x = -rng.uniform(0, 0.1) * width
    while x < width:
        w = width * rng.uniform(0.08, 0.22)
        if rng.random() < 0.85:
            top = horizon - height * rng.uniform(0.10, 0.40)
            canvas.rect(top, horizon + 1, x, x + w, BUILDING, rng)
        x += w
    for _ in range(rng.integers(1, 3)):
        left = width * rng.uniform(0, 0.8)
        right = left + width * rng.uniform(0.1, 0.25)
        canvas.rect(horizon - height * 0.06, horizon + 1, left, right, WALL, rng)
    for _ in range(rng.integers(1, 4)):
        cx, cy = width * rng.uniform(0, 1), horizon - height * rng.uniform(0.05, 0.2)
        canvas.ellipse(cy, cx, height * 0.09, width * 0.06, VEGETATION, rng)


def _objects(
    canvas: Canvas, horizon: int, ground: Callable, style: Style, rng: np.random.Generator
) -> None:
    """Things standing on the ground, scaled by their distance below the horizon, far first."""
    height = canvas.height
    placed: list[tuple[float, Callable[[float, float], None]]] = []

    def row() -> float:
        return horizon + (height - horizon) * rng.uniform(0.15, 1.0)

    def scale(y: float) -> float:
        return (y - horizon) / max(height - horizon, 1) * rng.uniform(*style.object_scale)

    def on_road(y: float, margin: float = 0.1) -> float:
        left, right, _ = ground(y)
        return rng.uniform(left + margin * (right - left), right - margin * (right - left))

    def on_walk(y: float) -> float:
        left, right, walk = ground(y)
        return rng.choice(
            [left - walk * rng.uniform(0.2, 0.8), right + walk * rng.uniform(0.2, 0.8)]
        )

    def vehicle(cls: int, h_frac: float, aspect: float) -> None:
        y = row()
        x = on_road(y)

        def draw(y: float = y, x: float = x) -> None:
            h = height * h_frac * scale(y)
            canvas.rect(y - h, y, x - aspect * h / 2, x + aspect * h / 2, cls, rng)

        placed.append((y, draw))

    def person(cls_vehicle: int | None) -> None:
        y = row()
        x = on_road(y) if cls_vehicle is not None else on_walk(y)

        def draw(y: float = y, x: float = x) -> None:
            h = height * 0.32 * scale(y)
            if cls_vehicle is not None:
                canvas.ellipse(y - h * 0.2, x, h * 0.2, h * 0.45, cls_vehicle, rng)
                canvas.rect(y - h * 1.0, y - h * 0.3, x - h * 0.12, x + h * 0.12, RIDER, rng)
                canvas.ellipse(y - h * 1.1, x, h * 0.1, h * 0.1, RIDER, rng)
            else:
                canvas.rect(y - h * 0.85, y, x - h * 0.12, x + h * 0.12, PERSON, rng)
                canvas.ellipse(y - h * 0.93, x, h * 0.09, h * 0.09, PERSON, rng)

        placed.append((y, draw))

    def pole() -> None:
        y = row()
        x = on_walk(y)
        top_kind = rng.choice([SIGN, LIGHT, POLE])

        def draw(y: float = y, x: float = x) -> None:
            h = height * 0.6 * scale(y)
            w = max(1.0, h * 0.05)
            canvas.rect(y - h, y, x - w / 2, x + w / 2, POLE, rng)
            if top_kind == SIGN:
                canvas.rect(y - h, y - h * 0.78, x - h * 0.12, x + h * 0.12, SIGN, rng)
            elif top_kind == LIGHT:
                canvas.rect(y - h, y - h * 0.7, x - h * 0.06, x + h * 0.06, LIGHT, rng)

        placed.append((y, draw))

    def fence() -> None:
        y = row()
        left, right, walk = ground(y)
        x = left - walk if rng.random() < 0.5 else right + walk
        length = canvas.width * rng.uniform(0.1, 0.3)

        def draw(y: float = y, x: float = x) -> None:
            h = height * 0.15 * scale(y)
            canvas.rect(y - h, y, x - length / 2, x + length / 2, FENCE, rng)

        placed.append((y, draw))

    for _ in range(rng.integers(style.cars[0], style.cars[1] + 1)):
        vehicle(CAR, 0.22, 1.8)
    for cls, chance, h_frac, aspect in (
        (TRUCK, 0.35, 0.36, 1.5),
        (BUS, 0.3, 0.42, 2.3),
        (TRAIN, 0.2, 0.38, 3.5),
    ):
        if rng.random() < chance:
            vehicle(cls, h_frac, aspect)
    for _ in range(rng.integers(style.persons[0], style.persons[1] + 1)):
        person(None)
    if rng.random() < 0.45:
        person(BICYCLE if rng.random() < 0.6 else MOTORCYCLE)
    if rng.random() < 0.3:
        vehicle(BICYCLE, 0.14, 1.4)
    for _ in range(rng.integers(1, 4)):
        pole()
    if rng.random() < 0.6:
        fence()
    for _, draw in sorted(placed, key=lambda item: item[0]):
        draw()


def _box_blur(image: np.ndarray, radius: int = 1) -> np.ndarray:
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    size = 2 * radius + 1
    out = np.zeros_like(image)
    for dy in range(size):
        for dx in range(size):
            out += padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]
    return out / size**2


def render(canvas: Canvas, style: Style, rng: np.random.Generator) -> np.ndarray:
    """The label map painted in a domain's look, as uint8 RGB."""
    height, width = canvas.height, canvas.width
    image = style.colours[canvas.label] + canvas.offset
    if style.texture > 0:
        blocks = rng.normal(0, style.texture, (height // 4 + 1, width // 4 + 1, 3))
        texture = np.kron(blocks, np.ones((4, 4, 1)))[:height, :width]
        image = image + _box_blur(texture, 2)
    image = image + rng.normal(0, style.pixel_noise, image.shape)
    if style.blur:
        image = _box_blur(image, 1)
    image = (image - 0.5) * style.contrast + 0.5 + style.brightness
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def scene(
    size: tuple[int, int], style: Style, rng: np.random.Generator, lacking: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (RGB uint8 image, train-id label map). ``lacking``: drawn with only
    the classes SYNTHIA has (terrain as vegetation, a truck as a car, a train as a bus)."""
    canvas = Canvas(*size)
    horizon = round(size[0] * rng.uniform(*style.horizon))
    ground = _ground(canvas, horizon, rng)
    _skyline(canvas, horizon, rng)
    _objects(canvas, horizon, ground, style, rng)
    if lacking:
        canvas.label = SYNTHIA_SUBSTITUTE[canvas.label]
    return render(canvas, style, rng), canvas.label.copy()


# SYNTHIA-RAND-CITYSCAPES has no terrain, truck or train pixels to speak of: its synthetic
# scenes draw them as the class nearest in look and place.
SYNTHIA_SUBSTITUTE = np.arange(19, dtype=np.uint8)
SYNTHIA_SUBSTITUTE[[TERRAIN, TRUCK, TRAIN]] = [VEGETATION, CAR, BUS]
