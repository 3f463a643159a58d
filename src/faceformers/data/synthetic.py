"""Procedural synthetic faces: the package's built-in dataset, so that every example and test runs without data.

A sample is a cartoon head and shoulders drawn from polygons, together with everything the real face datasets provide:
a 19-class CelebAMask-HQ parsing mask (and its LaPa / Helen views), 5 and 68 landmarks, the 40 CelebA attributes, a
caption and an identity. All annotations come from the same geometry as the pixels, so they agree with the image.

Conventions:

* ``sample(index)`` is a pure function of ``(seed, index)``; no global random state is touched.
* Identity ``index % num_identities`` fixes the face (shape, colours, hair, accessories); the sample fixes the pose
  (roll, yaw-like squash and parallax, scale, translation), the expression and the lighting.
* Coordinates are pixels with the centre of pixel ``(col, row)`` at ``(col, row)`` (the OpenCV convention), so a
  landmark ``(x, y)`` lies in ``mask[round(y), round(x)]``.
* Left/right class names follow CelebAMask-HQ: the *subject's* left, i.e. image-right in these unmirrored faces.
* ``landmarks_5`` follows the ArcFace template order (image-left eye first): the iBUG-68 reductions
  ``mean(36..41), mean(42..47), 30, 48, 54``.

The geometry lives in a *canonical frame*: face centre at the origin, ``x`` to the image right, ``y`` down, one unit
about half a face width. Every part also has a depth, used to fake yaw by parallax. A single pose transform maps the
canonical frame to pixels; the colour image is drawn at twice the resolution and box-downsampled (anti-aliasing), the
mask is drawn at the output resolution (nearest), and the landmarks go through the same transform.
"""

from __future__ import annotations

import colorsys
import functools
import io
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .labels import CELEBA_ATTRIBUTES, CELEBAMASK_HQ_LABELS, CELEBAMASK_TO_HELEN, CELEBAMASK_TO_LAPA


if TYPE_CHECKING:
    import datasets


logger = logging.getLogger(__name__)

Color = tuple[int, ...]  # RGB, or RGBA for translucent image-only decorations

_CLASS = {name: class_id for class_id, name in enumerate(CELEBAMASK_HQ_LABELS)}

_SUPERSAMPLE = 2  # the colour image is drawn at this multiple of the output size, then box-downsampled
_FACE_SCALE = 0.26  # pixels per canonical unit, as a fraction of the image size (the face spans about half the image)
_FACE_CENTRE = (0.5, 0.47)  # where the canonical origin lands, as fractions of the image size
_IDENTITY_STREAM = 1  # the two RNG streams never collide, even when an index equals an identity
_SAMPLE_STREAM = 2

_HAIR_COLORS: dict[str, Color] = {
    "black": (30, 26, 26),
    "brown": (100, 64, 38),
    "blond": (218, 186, 116),
    "gray": (172, 170, 166),
    "red": (156, 66, 34),
}
_SKIN_LIGHTEST: Color = (248, 222, 204)
_SKIN_DARKEST: Color = (92, 58, 40)
_IRIS_COLORS: tuple[Color, ...] = ((92, 56, 30), (60, 110, 170), (70, 120, 70), (110, 110, 120))
_METAL_COLORS: tuple[Color, ...] = ((232, 192, 64), (214, 214, 226))
_FRAME_COLORS: tuple[Color, ...] = ((20, 20, 24), (96, 58, 30), (200, 168, 70), (190, 190, 200), (160, 30, 40))
_SCLERA: Color = (242, 240, 234)
_PUPIL: Color = (12, 10, 10)
_INNER_MOUTH: Color = (96, 22, 32)
_TEETH: Color = (236, 232, 220)

# Depth of each part in canonical units (positive = towards the camera): a yaw shifts a part by depth * sin(yaw).
_DEPTH = {
    "back": -0.3,
    "ear": -0.15,  # shallow, so that an earring drawn over the skin stays near its ear lobe
    "outline": 0.0,
    "eye": 0.25,
    "brow": 0.3,
    "nose": 0.45,
    "mouth": 0.35,
    "hair": 0.1,
    "glasses": 0.45,
}
_NOSE_TIP_DEPTH = 0.6


# --------------------------------------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class FaceShape:
    """Outline, skin and facial features of an identity, in canonical units."""

    half_width: float
    half_height: float
    jaw_taper: float  # how much the lower face narrows towards the chin
    skin: Color
    pale: bool
    chubby: bool
    double_chin: bool
    oval: bool
    high_cheekbones: bool
    rosy_cheeks: bool
    eye_x: float  # distance of each eye centre from the midline
    eye_y: float
    eye_half_width: float
    eye_half_height: float  # fully open
    eye_tilt: float  # outer corners up when positive
    narrow_eyes: bool
    bags_under_eyes: bool
    iris: Color
    brow_gap: float  # from the eye centre to the eyebrow centreline
    brow_thickness: float
    brow_arch: float
    bushy_eyebrows: bool
    arched_eyebrows: bool
    nose_tip_y: float
    nose_half_width: float
    big_nose: bool
    pointy_nose: bool
    mouth_y: float
    mouth_half_width: float
    upper_lip: float  # lip thickness at the centre
    lower_lip: float
    big_lips: bool
    lip_color: Color


@dataclass(frozen=True)
class Hair:
    """Scalp and facial hair of an identity."""

    color_name: str  # a key of _HAIR_COLORS
    color: Color
    bald: bool
    length: str  # "short", "medium" or "long"
    wavy: bool
    bangs: bool
    receding: bool
    volume: float
    stubble: bool
    mustache: bool
    goatee: bool
    full_beard: bool
    sideburns: bool


@dataclass(frozen=True)
class Outfit:
    """Clothes, accessories and make-up of an identity."""

    cloth: Color
    eyeglasses: bool
    frame: Color
    hat: bool
    hat_color: Color
    earrings: bool
    necklace: bool
    metal: Color
    necktie: bool
    tie_color: Color
    heavy_makeup: bool
    lipstick: bool


@dataclass(frozen=True)
class Identity:
    """Everything that stays the same across the photos of one synthetic person."""

    male: bool
    young: bool
    attractive: bool
    face: FaceShape
    hair: Hair
    outfit: Outfit


def _chance(rng: np.random.Generator, probability: float) -> bool:
    return bool(rng.random() < probability)


def _hsv_color(
    rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float], val: tuple[float, float]
) -> Color:
    """A random RGB colour with hue, saturation and value drawn uniformly in the given ranges (all in [0, 1])."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*sat), rng.uniform(*val))
    return tuple(int(round(255 * channel)) for channel in rgb)


def _mix(a: Color, b: Color, weight: float) -> Color:
    """`(1 - weight) * a + weight * b`, channel-wise, as integers."""
    return tuple(int(round((1 - weight) * x + weight * y)) for x, y in zip(a, b, strict=True))


def _scaled(color: Color, factor: float) -> Color:
    return tuple(min(255, int(round(channel * factor))) for channel in color)


def _sample_face_shape(rng: np.random.Generator, male: bool) -> FaceShape:
    chubby, oval = _chance(rng, 0.12), _chance(rng, 0.3)
    half_width = rng.uniform(0.78, 0.88) + (0.07 if chubby else 0.0) + (0.03 if male else 0.0)
    aspect = rng.uniform(1.36, 1.44) if oval and not chubby else rng.uniform(1.22, 1.3)
    tone = float(rng.beta(1.6, 2.0))  # 0 = lightest, 1 = darkest
    skin = _mix(_SKIN_LIGHTEST, _SKIN_DARKEST, tone)
    narrow_eyes, bushy, arched = (
        _chance(rng, 0.12),
        _chance(rng, 0.3 if male else 0.12),
        _chance(rng, 0.15 if male else 0.4),
    )
    big_nose, pointy_nose, big_lips = _chance(rng, 0.2), _chance(rng, 0.2), _chance(rng, 0.2)
    eye_half_width = rng.uniform(0.15, 0.18)
    upper_lip, lower_lip = rng.uniform(0.045, 0.06), rng.uniform(0.06, 0.075)
    return FaceShape(
        half_width=half_width,
        half_height=half_width * aspect,
        jaw_taper=rng.uniform(0.08, 0.14) if chubby else rng.uniform(0.2, 0.32),
        skin=skin,
        pale=tone < 0.12,
        chubby=chubby,
        double_chin=_chance(rng, 0.6 if chubby else 0.04),
        oval=oval and not chubby,
        high_cheekbones=_chance(rng, 0.35),
        rosy_cheeks=_chance(rng, 0.1 if male else 0.25),
        eye_x=rng.uniform(0.34, 0.41),
        eye_y=rng.uniform(-0.16, -0.08),
        eye_half_width=eye_half_width,
        eye_half_height=rng.uniform(0.038, 0.046) if narrow_eyes else rng.uniform(0.066, 0.084),
        eye_tilt=rng.uniform(-0.06, 0.12),
        narrow_eyes=narrow_eyes,
        bags_under_eyes=_chance(rng, 0.15),
        iris=_IRIS_COLORS[rng.integers(len(_IRIS_COLORS))],
        brow_gap=rng.uniform(0.18, 0.23),
        brow_thickness=rng.uniform(0.075, 0.09) if bushy else rng.uniform(0.04, 0.055),
        brow_arch=rng.uniform(0.07, 0.09) if arched else rng.uniform(0.015, 0.04),
        bushy_eyebrows=bushy,
        arched_eyebrows=arched,
        nose_tip_y=rng.uniform(0.25, 0.32),
        nose_half_width=rng.uniform(0.17, 0.2) if big_nose else rng.uniform(0.115, 0.14),
        big_nose=big_nose,
        pointy_nose=pointy_nose,
        mouth_y=rng.uniform(0.57, 0.64),
        mouth_half_width=rng.uniform(0.21, 0.26),
        upper_lip=upper_lip * (1.4 if big_lips else 1.0),
        lower_lip=lower_lip * (1.4 if big_lips else 1.0),
        big_lips=big_lips,
        lip_color=_mix(skin, (176, 66, 78), rng.uniform(0.35, 0.55)),
    )


def _sample_hair_color(rng: np.random.Generator, young: bool) -> str:
    names = ("black", "brown", "blond", "gray", "red")
    weights = (0.36, 0.3, 0.22, 0.04, 0.08) if young else (0.22, 0.2, 0.1, 0.44, 0.04)
    return names[rng.choice(len(names), p=weights)]


def _sample_hair(rng: np.random.Generator, male: bool, young: bool) -> Hair:
    color_name = _sample_hair_color(rng, young)
    bald = male and _chance(rng, 0.08 if young else 0.25)
    length = ("short", "medium", "long")[rng.choice(3, p=(0.8, 0.15, 0.05) if male else (0.08, 0.32, 0.6))]
    full_beard = male and _chance(rng, 0.2)
    goatee = male and not full_beard and _chance(rng, 0.12)
    mustache = male and (full_beard or _chance(rng, 0.12))
    return Hair(
        color_name=color_name,
        color=_scaled(_HAIR_COLORS[color_name], rng.uniform(0.88, 1.1)),
        bald=bald,
        length=length,
        wavy=_chance(rng, 0.3 if male else 0.45),
        bangs=not bald and _chance(rng, 0.15 if male else 0.35),
        receding=male and not bald and _chance(rng, 0.1 if young else 0.35),
        volume=rng.uniform(0.08, 0.2),
        stubble=male and not full_beard and _chance(rng, 0.25),
        mustache=mustache,
        goatee=goatee,
        full_beard=full_beard,
        sideburns=male and not bald and length == "short" and _chance(rng, 0.3),
    )


def _sample_outfit(rng: np.random.Generator, male: bool) -> Outfit:
    return Outfit(
        cloth=_hsv_color(rng, (0.0, 1.0), (0.45, 0.9), (0.15, 0.8)),
        eyeglasses=_chance(rng, 0.2),
        frame=_FRAME_COLORS[rng.integers(len(_FRAME_COLORS))],
        hat=_chance(rng, 0.1),
        hat_color=_hsv_color(rng, (0.0, 1.0), (0.3, 0.9), (0.2, 0.8)),
        earrings=_chance(rng, 0.05 if male else 0.45),
        necklace=_chance(rng, 0.05 if male else 0.25),
        metal=_METAL_COLORS[rng.integers(len(_METAL_COLORS))],
        necktie=male and _chance(rng, 0.15),
        tie_color=_hsv_color(rng, (0.0, 1.0), (0.5, 0.9), (0.3, 0.8)),
        heavy_makeup=not male and _chance(rng, 0.4),
        lipstick=not male and _chance(rng, 0.5),
    )


def sample_identity(seed: int, identity: int) -> Identity:
    """The appearance of synthetic person `identity`, a pure function of `(seed, identity)`."""
    rng = np.random.default_rng([seed, _IDENTITY_STREAM, identity])
    male, young = _chance(rng, 0.5), _chance(rng, 0.75)
    return Identity(
        male=male,
        young=young,
        attractive=_chance(rng, 0.5),
        face=_sample_face_shape(rng, male),
        hair=_sample_hair(rng, male, young),
        outfit=_sample_outfit(rng, male),
    )


# ------------------------------------------------------------------------------------------------ per-sample factors


@dataclass(frozen=True)
class Pose:
    """Head pose of one sample."""

    roll: float  # in-plane rotation, radians
    yaw: float  # radians; faked by squashing x and shifting parts by depth
    scale: float
    shift: tuple[float, float]  # translation as fractions of the image size


@dataclass(frozen=True)
class Expression:
    """Facial expression of one sample."""

    smile: float  # 0 neutral .. 1 broad smile
    smiling: bool
    mouth_open: float  # gap between the lips in canonical units; 0 = closed
    eye_open: float  # multiplies the eye height
    brow_raise: float  # canonical units, upwards
    gaze: tuple[float, float]  # iris offset as fractions of the room left in the eye


@dataclass(frozen=True)
class Lighting:
    """Photometric conditions of one sample."""

    brightness: float
    contrast: float
    cast: tuple[float, float, float]  # per-channel gain
    gradient: float  # strength of the directional shading across the image
    direction: float  # angle of the shading gradient, radians
    noise: float  # standard deviation of the sensor noise, in 8-bit levels
    blur: float  # Gaussian blur radius in pixels; 0 = sharp


@dataclass(frozen=True)
class Scene:
    """Per-sample factors: pose, expression, lighting and the background."""

    pose: Pose
    expression: Expression
    lighting: Lighting
    background: tuple[Color, Color]
    clutter: tuple[tuple[str, np.ndarray, Color], ...]  # (kind, box in image fractions, colour)


def _background_color(rng: np.random.Generator) -> Color:
    """Cool, mostly desaturated colours: easy to tell apart from skin and hair."""
    return _hsv_color(rng, (0.25, 0.75), (0.05, 0.3), (0.6, 0.95))


def _sample_scene(rng: np.random.Generator) -> Scene:
    smiling = _chance(rng, 0.5)
    expression = Expression(
        smile=rng.uniform(0.55, 1.0) if smiling else rng.uniform(0.0, 0.25),
        smiling=smiling,
        mouth_open=rng.uniform(0.05, 0.11) if _chance(rng, 0.45) else 0.0,
        eye_open=rng.uniform(0.65, 1.1),
        brow_raise=rng.uniform(-0.02, 0.05),
        gaze=(rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3)),
    )
    pose = Pose(
        roll=math.radians(rng.uniform(-10.0, 10.0)),
        yaw=math.radians(rng.uniform(-20.0, 20.0)),
        scale=rng.uniform(0.92, 1.08),
        shift=(rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)),
    )
    lighting = Lighting(
        brightness=rng.uniform(0.85, 1.12),
        contrast=rng.uniform(0.85, 1.1),
        cast=tuple(1.0 + rng.uniform(-0.07, 0.07, size=3)),
        gradient=rng.uniform(0.0, 0.35),
        direction=rng.uniform(0.0, 2 * math.pi),
        noise=rng.uniform(1.0, 4.0),
        blur=rng.uniform(0.8, 1.4) if _chance(rng, 0.06) else 0.0,
    )
    clutter = tuple(
        (
            ("ellipse", "rectangle")[rng.integers(2)],
            np.sort(rng.uniform(-0.1, 1.1, size=(2, 2)), axis=0),
            _background_color(rng),
        )
        for _ in range(rng.integers(0, 4))
    )
    return Scene(pose, expression, lighting, (_background_color(rng), _background_color(rng)), clutter)


# ------------------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Shape:
    """One drawing primitive in the canonical frame.

    `points` `(num_points, 2)` is a filled polygon, or a polyline when `line_width > 0`. `class_id` is painted into the
    mask; `None` draws into the colour image only (irises, shading, make-up, beards: decorations that sit inside a
    part whose class is already painted).
    """

    points: np.ndarray
    color: Color
    class_id: int | None
    depth: float
    line_width: float = 0.0


def _ellipse(cx: float, cy: float, rx: float, ry: float, num_points: int = 24) -> np.ndarray:
    theta = np.linspace(0.0, 2 * np.pi, num_points, endpoint=False)
    return np.stack([cx + rx * np.cos(theta), cy + ry * np.sin(theta)], axis=-1)


def _polygon(upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """A closed outline from two curves traced left to right: `upper` forwards, then `lower` backwards."""
    return np.concatenate([upper, lower[::-1]], axis=0)


def face_outline(face: FaceShape, num_points: int = 48) -> np.ndarray:
    """The face contour `(num_points, 2)`, traced from the image-right side through the chin."""
    theta = np.linspace(0.0, 2 * np.pi, num_points, endpoint=False)
    return _outline_at(face, theta)


def _outline_at(face: FaceShape, theta: np.ndarray) -> np.ndarray:
    """Points of the face contour at angles `theta` (0 = image right, pi/2 = chin, y down)."""
    sin, cos = np.sin(theta), np.cos(theta)
    taper = 1.0 - face.jaw_taper * np.clip(sin, 0.0, None) ** 2
    height = np.where(sin < 0, 0.95 * face.half_height, face.half_height)
    return np.stack([face.half_width * cos * taper, height * sin], axis=-1)


def _jaw_angles(face: FaceShape, num_points: int) -> np.ndarray:
    """Angles of the jaw line, from eye level on the image left, through the chin, to eye level on the image right."""
    alpha = math.asin(min(1.0, -face.eye_y / (0.95 * face.half_height)))
    return np.linspace(math.pi + alpha, -alpha, num_points)


def _eye_lids(face: FaceShape, side: int, openness: float, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lid `(len(s), 2)` of the eye on image side `side` (-1 left, +1 right), at fractions `s` of its
    width measured from its image-left corner."""
    cx, half_width = side * face.eye_x, face.eye_half_width
    height = face.eye_half_height * openness
    x = cx + half_width * (2 * s - 1)
    tilt = -side * face.eye_tilt * (x - cx)  # outer corners up for a positive tilt
    bulge = np.sin(np.pi * s)
    upper = np.stack([x, face.eye_y + tilt - height * bulge**0.8], axis=-1)
    lower = np.stack([x, face.eye_y + tilt + 0.65 * height * bulge**0.9], axis=-1)
    return upper, lower


def _iris(face: FaceShape, side: int, expression: Expression, radius_factor: float) -> np.ndarray:
    """The part of a disc inside the eye opening: bounded by the lids and by the circle."""
    upper, lower = _eye_lids(face, side, expression.eye_open, np.linspace(0.0, 1.0, 25))
    radius = radius_factor * face.eye_half_height
    room = face.eye_half_width - radius
    cx = side * face.eye_x + expression.gaze[0] * room
    cy = face.eye_y + expression.gaze[1] * face.eye_half_height * 0.3
    inside = np.abs(upper[:, 0] - cx) < radius
    x = upper[inside, 0]
    half_chord = np.sqrt(np.maximum(radius**2 - (x - cx) ** 2, 0.0))
    top = np.maximum(upper[inside, 1], cy - half_chord)
    bottom = np.minimum(lower[inside, 1], cy + half_chord)
    return _polygon(np.stack([x, top], -1), np.stack([x, np.maximum(bottom, top)], -1))


def _brow_centreline(face: FaceShape, side: int, raise_: float, s: np.ndarray) -> np.ndarray:
    """Centreline of the eyebrow on image side `side` at fractions `s` from its inner end to its outer end."""
    inner_x = side * (face.eye_x - 0.9 * face.eye_half_width)
    x = inner_x + side * 2.3 * face.eye_half_width * s
    y = face.eye_y - face.brow_gap - raise_ - face.brow_arch * np.sin(np.pi * np.clip(s * 1.15, 0, 1)) + 0.03 * s
    return np.stack([x, y], axis=-1)


def _brow(face: FaceShape, side: int, raise_: float) -> np.ndarray:
    s = np.linspace(0.0, 1.0, 10)
    centre = _brow_centreline(face, side, raise_, s)
    half = (face.brow_thickness * (1.0 - 0.45 * s) / 2)[:, None] * np.array([0.0, 1.0])
    return _polygon(centre - half, centre + half)


def _lips(face: FaceShape, expression: Expression, s: np.ndarray) -> dict[str, np.ndarray]:
    """The four lip curves `(len(s), 2)` at fractions `s` of the mouth width, from the image-left corner."""
    half_width = face.mouth_half_width * (1.0 + 0.15 * expression.smile)
    x = half_width * (2 * s - 1)
    centred = (2 * s - 1) ** 2
    lift = face.mouth_y - 0.06 * expression.smile * centred  # corners rise with the smile
    bulge = np.sin(np.pi * s)
    gap = 0.5 * expression.mouth_open * bulge
    cupid = 1.0 - 0.25 * np.exp(-((2 * s - 1) ** 2) / 0.01)  # the dip in the middle of the upper lip
    curves = {
        "upper_outer": lift - gap - face.upper_lip * (0.3 + 0.7 * bulge**0.6) * cupid,  # rounded corners
        "upper_inner": lift - gap,
        "lower_inner": lift + gap,
        "lower_outer": lift + gap + face.lower_lip * (0.3 + 0.7 * bulge**0.7),
    }
    return {name: np.stack([x, y], axis=-1) for name, y in curves.items()}


def _nose(face: FaceShape) -> np.ndarray:
    """Nose outline: a narrow bridge from between the eyes widening into the nostril wings."""
    tip, half_width = face.nose_tip_y, face.nose_half_width
    bridge = 0.045 if face.pointy_nose else 0.06
    half = np.array(
        [
            [bridge, face.eye_y + 0.02],
            [bridge * 1.3, (face.eye_y + tip) / 2],
            [half_width * 0.7, tip - 0.06],
            [half_width, tip + 0.02],
            [half_width * 0.85, tip + 0.08],
            [half_width * 0.4, tip + 0.1],
            [0.0, tip + (0.13 if face.pointy_nose else 0.11)],
        ]
    )
    mirrored = half[-2::-1] * np.array([-1.0, 1.0])
    return np.concatenate([half, mirrored], axis=0)


def landmarks_68(identity: Identity, expression: Expression) -> tuple[np.ndarray, np.ndarray]:
    """iBUG-68 landmarks `(68, 2)` in the canonical frame, and the depth `(68,)` of each point.

    Jaw 0-16 (image left to right through the chin), brows 17-21 and 22-26 (image left to right), nose bridge 27-30
    (top to tip), nostrils 31-35, eyes 36-41 and 42-47 (image-left corner, upper lid, image-right corner, lower lid),
    outer lips 48-59 and inner lips 60-67 (clockwise from the image-left corner).
    """
    face = identity.face
    jaw = _outline_at(face, _jaw_angles(face, 17))
    s5 = np.linspace(0.0, 1.0, 5)
    brows = [
        _brow_centreline(face, -1, expression.brow_raise, s5[::-1]),
        _brow_centreline(face, 1, expression.brow_raise, s5),
    ]
    bridge = np.stack([np.zeros(4), np.linspace(face.eye_y + 0.02, face.nose_tip_y, 4)], axis=-1)
    nostril_x = face.nose_half_width * np.array([-0.65, -0.35, 0.0, 0.35, 0.65])
    nostrils = np.stack([nostril_x, face.nose_tip_y + np.array([0.06, 0.08, 0.09, 0.08, 0.06])], axis=-1)
    eyes = []
    for side in (-1, 1):
        upper, lower = _eye_lids(face, side, expression.eye_open, np.array([0.0, 1 / 3, 2 / 3, 1.0]))
        eyes.append(np.concatenate([upper, lower[2:0:-1]]))
    outer = _lips(face, expression, np.linspace(0.0, 1.0, 7))
    inner = _lips(face, expression, np.array([0.05, 0.25, 0.5, 0.75, 0.95]))
    mouth_outer = np.concatenate([outer["upper_outer"][:6], outer["lower_outer"][:0:-1]])
    mouth_inner = np.concatenate([inner["upper_inner"], inner["lower_inner"][3:0:-1]])
    points = np.concatenate([jaw, *brows, bridge, nostrils, *eyes, mouth_outer, mouth_inner]).astype(np.float64)
    depth = np.concatenate(
        [
            np.full(17, _DEPTH["outline"]),
            np.full(10, _DEPTH["brow"]),
            np.linspace(_DEPTH["nose"], _NOSE_TIP_DEPTH, 4),
            np.full(5, _DEPTH["nose"]),
            np.full(12, _DEPTH["eye"]),
            np.full(20, _DEPTH["mouth"]),
        ]
    )
    return points, depth


def landmarks_5_from_68(points: np.ndarray) -> np.ndarray:
    """The ArcFace-order 5 points `(5, 2)` of iBUG-68 landmarks `(68, 2)`: eye centres (image-left first), nose tip,
    mouth corners (image-left first)."""
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


# ----------------------------------------------------------------------------------------------------------- parts


def _back_hair_shapes(identity: Identity) -> list[Shape]:
    """Medium and long hair falling behind the neck and shoulders."""
    face, hair = identity.face, identity.hair
    if hair.bald or hair.length == "short":
        return []
    bottom = 0.9 if hair.length == "medium" else 1.9
    half_width = face.half_width + hair.volume + 0.05
    theta = np.linspace(np.pi, 2 * np.pi, 16)
    top = np.stack([half_width * np.cos(theta), -0.1 + (face.half_height + hair.volume) * np.sin(theta)], -1)
    side_y = np.linspace(-0.1, bottom, 6)
    wave = 0.04 * np.sin(side_y * 9.0) if hair.wavy else np.zeros_like(side_y)
    right = np.stack([half_width + 0.06 * (side_y + 0.1) + wave, side_y], -1)
    left = right[::-1] * np.array([-1.0, 1.0])
    return [Shape(np.concatenate([left, top, right]), hair.color, _CLASS["hair"], _DEPTH["back"])]


def _body_shapes(identity: Identity) -> list[Shape]:
    """Neck, clothes with a neckline, and an optional necktie."""
    face, outfit = identity.face, identity.outfit
    neck_half = face.half_width * (0.5 if identity.male else 0.44)
    neck = np.array([[-neck_half, 0.3], [neck_half, 0.3], [neck_half * 1.1, 2.6], [-neck_half * 1.1, 2.6]])
    shoulder_y = face.half_height + 0.45
    neckline_y = shoulder_y + (0.12 if outfit.necktie else 0.3)
    half = np.array(
        [
            [0.0, neckline_y],
            [neck_half * 0.9, shoulder_y - 0.06],
            [neck_half * 1.8, shoulder_y - 0.04],
            [2.1, shoulder_y + 0.25],
            [4.0, shoulder_y + 0.9],
            [4.0, 5.0],
        ]
    )
    cloth = np.concatenate([half, half[:0:-1] * np.array([-1.0, 1.0])])
    shapes = [
        Shape(neck, _scaled(face.skin, 0.84), _CLASS["neck"], _DEPTH["back"]),
        Shape(cloth, outfit.cloth, _CLASS["cloth"], _DEPTH["back"]),
    ]
    if outfit.necktie:
        tie = np.array(
            [
                [-0.07, neckline_y - 0.02],
                [0.07, neckline_y - 0.02],
                [0.05, neckline_y + 0.1],
                [0.14, 3.0],
                [-0.14, 3.0],
                [-0.05, neckline_y + 0.1],
            ]
        )
        shapes.append(Shape(tie, outfit.tie_color, _CLASS["cloth"], _DEPTH["back"]))
    return shapes


def _necklace_shapes(identity: Identity) -> list[Shape]:
    if not identity.outfit.necklace:
        return []
    face, metal = identity.face, identity.outfit.metal
    half = face.half_width * 0.55
    x = np.linspace(-half, half, 12)
    y = face.half_height + 0.05 + 0.3 * (1.0 - (x / half) ** 2)
    bottom = y.max()
    return [
        Shape(np.stack([x, y], -1), metal, _CLASS["necklace"], _DEPTH["back"], line_width=0.05),
        Shape(_ellipse(0.0, bottom + 0.05, 0.05, 0.06, 12), metal, _CLASS["necklace"], _DEPTH["back"]),
    ]


def _ear_centre(face: FaceShape, side: int) -> tuple[float, float]:
    return side * face.half_width * 0.98, (face.eye_y + face.nose_tip_y) / 2 + 0.03


def _ear_shapes(identity: Identity) -> list[Shape]:
    face = identity.face
    shapes = []
    for side, name in ((1, "left_ear"), (-1, "right_ear")):  # subject's left ear is on the image right
        cx, cy = _ear_centre(face, side)
        shapes.append(Shape(_ellipse(cx, cy, 0.11, 0.22, 20), _scaled(face.skin, 0.93), _CLASS[name], _DEPTH["ear"]))
        inner = _ellipse(cx + side * 0.02, cy, 0.05, 0.13, 12)
        shapes.append(Shape(inner, _scaled(face.skin, 0.78), None, _DEPTH["ear"]))
    return shapes


def _skin_shapes(identity: Identity) -> list[Shape]:
    """Face skin with its image-only shading: cheeks, double chin, eye bags and eye shadow."""
    face, outfit = identity.face, identity.outfit
    depth = _DEPTH["outline"]
    shapes = [Shape(face_outline(face), face.skin, _CLASS["skin"], depth)]
    cheek_y = (face.nose_tip_y + face.eye_y) / 2 + 0.08
    for side in (-1, 1):
        cx = side * (face.eye_x + 0.05)
        if face.high_cheekbones:
            shapes.append(Shape(_ellipse(cx * 1.15, cheek_y + 0.12, 0.16, 0.05), (60, 30, 20, 45), None, depth))
        if face.rosy_cheeks or outfit.heavy_makeup:
            shapes.append(Shape(_ellipse(cx, cheek_y, 0.14, 0.09), (230, 90, 100, 70), None, depth))
        if face.bags_under_eyes:
            bag = _ellipse(side * face.eye_x, face.eye_y + 0.09, face.eye_half_width * 0.8, 0.035)
            shapes.append(Shape(bag, (70, 40, 50, 70), None, _DEPTH["eye"]))
        if outfit.heavy_makeup:
            shadow = _ellipse(side * face.eye_x, face.eye_y - 0.06, face.eye_half_width * 1.1, 0.08)
            shapes.append(Shape(shadow, (120, 60, 130, 90), None, _DEPTH["eye"]))
    if face.double_chin:
        chin = _outline_at(face, np.linspace(0.35 * np.pi, 0.65 * np.pi, 8)) * np.array([1.0, 0.93])
        shapes.append(Shape(chin, _scaled(face.skin, 0.78), None, depth, line_width=0.025))
    return shapes


def _facial_hair_shapes(identity: Identity, expression: Expression) -> list[Shape]:
    """Beard, stubble, goatee and moustache: drawn on the skin, which they belong to in the mask."""
    face, hair = identity.face, identity.hair
    color = _mix(hair.color, face.skin, 0.15)
    lips = _lips(face, expression, np.linspace(0.0, 1.0, 9))
    mouth_half = face.mouth_half_width + 0.08
    top = face.mouth_y - face.upper_lip - 0.08
    shapes = []
    if hair.full_beard or hair.stubble:
        lower_face = _outline_at(face, np.linspace(0.03 * np.pi, 0.97 * np.pi, 24))
        inner = np.array(
            [[-face.half_width * 0.85, 0.12], [-mouth_half, top], [mouth_half, top], [face.half_width * 0.85, 0.12]]
        )
        beard_color = color if hair.full_beard else (*color[:3], 70)
        shapes.append(Shape(np.concatenate([lower_face, inner]), beard_color, None, _DEPTH["outline"]))
    if hair.goatee:
        chin_y = face.half_height * 0.94
        bottom_lip = lips["lower_outer"][4, 1]
        goatee = _ellipse(
            0.0, (bottom_lip + chin_y) / 2, face.mouth_half_width * 0.45, (chin_y - bottom_lip) / 2 + 0.02
        )
        shapes.append(Shape(goatee, color, None, _DEPTH["mouth"]))
    if hair.mustache:
        upper = lips["upper_outer"] + np.array([0.0, 0.01])
        mustache = _polygon(upper * np.array([1.2, 1.0]) - np.array([0.0, 0.075]), upper * np.array([1.2, 1.0]))
        shapes.append(Shape(mustache, color, None, _DEPTH["mouth"]))
    return shapes


def _nose_shapes(identity: Identity) -> list[Shape]:
    face = identity.face
    depth = _DEPTH["nose"]
    shapes = [Shape(_nose(face), _scaled(face.skin, 0.95), _CLASS["nose"], depth)]
    for side in (-1, 1):
        nostril = _ellipse(side * face.nose_half_width * 0.45, face.nose_tip_y + 0.065, 0.035, 0.018, 10)
        shapes.append(Shape(nostril, _scaled(face.skin, 0.45), None, depth))
    ridge = np.array([[0.03, face.eye_y + 0.08], [0.045, face.nose_tip_y - 0.04]])
    shapes.append(Shape(ridge, _scaled(face.skin, 0.82), None, depth, line_width=0.02))
    return shapes


def _eye_shapes(identity: Identity, expression: Expression) -> list[Shape]:
    face, outfit = identity.face, identity.outfit
    depth = _DEPTH["eye"]
    s = np.linspace(0.0, 1.0, 13)
    shapes = []
    for side, name in ((1, "left_eye"), (-1, "right_eye")):
        upper, lower = _eye_lids(face, side, expression.eye_open, s)
        shapes.append(Shape(_polygon(upper, lower), _SCLERA, _CLASS[name], depth))
        shapes.append(Shape(_iris(face, side, expression, 0.95), face.iris, None, depth))
        shapes.append(Shape(_iris(face, side, expression, 0.45), _PUPIL, None, depth))
        liner = 0.03 if outfit.heavy_makeup else 0.015
        shapes.append(Shape(upper, (25, 18, 18), None, depth, line_width=liner))
    return shapes


def _brow_shapes(identity: Identity, expression: Expression) -> list[Shape]:
    hair = identity.hair
    color = _scaled(hair.color, 0.7) if not hair.bald else (50, 36, 28)
    return [
        Shape(_brow(identity.face, side, expression.brow_raise), color, _CLASS[name], _DEPTH["brow"])
        for side, name in ((1, "left_eyebrow"), (-1, "right_eyebrow"))
    ]


def _mouth_shapes(identity: Identity, expression: Expression) -> list[Shape]:
    face, outfit = identity.face, identity.outfit
    depth = _DEPTH["mouth"]
    lips = _lips(face, expression, np.linspace(0.0, 1.0, 17))
    lip_color = (186, 28, 52) if outfit.lipstick else face.lip_color
    shapes = [
        Shape(
            _polygon(lips["upper_outer"], lips["upper_inner"]), _scaled(lip_color, 1.06), _CLASS["upper_lip"], depth
        ),
        Shape(_polygon(lips["lower_inner"], lips["lower_outer"]), lip_color, _CLASS["lower_lip"], depth),
    ]
    if expression.mouth_open > 0:
        shapes.append(
            Shape(_polygon(lips["upper_inner"], lips["lower_inner"]), _INNER_MOUTH, _CLASS["inner_mouth"], depth)
        )
        if expression.smiling:
            teeth_bottom = lips["upper_inner"] + np.array([0.0, 0.45 * expression.mouth_open])
            teeth_bottom[:, 1] = np.minimum(teeth_bottom[:, 1], lips["lower_inner"][:, 1])
            shapes.append(Shape(_polygon(lips["upper_inner"][2:-2], teeth_bottom[2:-2]), _TEETH, None, depth))
    return shapes


def _hairline(identity: Identity, x: np.ndarray) -> np.ndarray:
    """Height of the lower edge of the scalp hair over the forehead at positions `x`."""
    face, hair = identity.face, identity.hair
    u = x / (0.85 * face.half_width)
    if hair.bangs:
        # the fringe ends above the eyebrow's highest point, even when arched and raised by the expression
        fringe = face.eye_y - face.brow_gap - face.brow_thickness / 2 - face.brow_arch - 0.07
        return fringe - 0.03 * (np.arange(len(x)) % 2) - 0.12 * u**4
    top = -0.66 * face.half_height
    if hair.receding:
        return top - 0.18 * face.half_height * (1.0 - 0.6 * np.cos(np.pi * u) ** 2) + 0.15 * u**2
    return top + 0.2 * u**2


def _front_hair_shapes(identity: Identity) -> list[Shape]:
    """Scalp hair over the top of the face (cap, fringe, side locks), sideburns, or the side patches of a bald head."""
    face, hair = identity.face, identity.hair
    depth = _DEPTH["hair"]
    if hair.bald:
        patch = np.array([[0.9, -0.55], [1.08, -0.5], [1.06, 0.05], [0.95, 0.0]]) * np.array([face.half_width, 1.0])
        return [Shape(patch * np.array([side, 1.0]), hair.color, _CLASS["hair"], depth) for side in (-1, 1)]
    side_bottom = {"short": -0.25, "medium": 0.45, "long": 0.75}[hair.length]
    radius_x, radius_y = face.half_width + hair.volume, 0.95 * face.half_height + hair.volume
    theta = np.linspace(np.pi, 2 * np.pi, 25)
    wave = 1.0 + (0.03 * np.sin(10 * theta) if hair.wavy else 0.0)
    crown = np.stack([radius_x * wave * np.cos(theta), -0.05 + radius_y * wave * np.sin(theta)], -1)
    crown[[0, -1], 1] = side_bottom
    forehead_x = np.linspace(0.85 * face.half_width, -0.85 * face.half_width, 15)
    temple = 0.92 * face.half_width
    inner = np.concatenate(
        [
            [[temple, side_bottom], [temple, -0.3]],
            np.stack([forehead_x, _hairline(identity, forehead_x)], -1),
            [[-temple, -0.3], [-temple, side_bottom]],
        ]
    )
    shapes = [Shape(np.concatenate([crown, inner]), hair.color, _CLASS["hair"], depth)]
    if hair.sideburns:
        burn = np.array([[0.86, -0.35], [0.99, -0.35], [0.99, 0.22], [0.9, 0.22]]) * np.array([face.half_width, 1.0])
        shapes += [Shape(burn * np.array([side, 1.0]), hair.color, _CLASS["hair"], depth) for side in (-1, 1)]
    return shapes


def _earring_shapes(identity: Identity) -> list[Shape]:
    if not identity.outfit.earrings:
        return []
    face, shapes = identity.face, []
    for side in (-1, 1):
        cx, cy = _ear_centre(face, side)
        stud = _ellipse(cx, cy + 0.26, 0.055, 0.07, 12)
        shapes.append(Shape(stud, identity.outfit.metal, _CLASS["earring"], _DEPTH["ear"]))
    return shapes


def _glasses_shapes(identity: Identity) -> list[Shape]:
    """Tinted clear lenses (image only) and frames; only the frames are labelled eyeglasses, the eyes stay visible."""
    if not identity.outfit.eyeglasses:
        return []
    face, frame = identity.face, identity.outfit.frame
    depth, width = _DEPTH["glasses"], 0.05
    rim_x, rim_y = face.eye_half_width * 1.45, 0.16
    shapes = []
    for side in (-1, 1):
        cx, cy = side * face.eye_x, face.eye_y + 0.02
        rim = _ellipse(cx, cy, rim_x, rim_y, 24)
        shapes.append(Shape(rim, (200, 225, 255, 45), None, depth))
        shapes.append(Shape(np.concatenate([rim, rim[:1]]), frame, _CLASS["eyeglasses"], depth, line_width=width))
        temple = np.array([[cx + side * rim_x, cy - 0.04], [side * face.half_width * 0.99, cy - 0.06]])
        shapes.append(Shape(temple, frame, _CLASS["eyeglasses"], depth, line_width=width))
    inner = face.eye_x - rim_x
    bridge = np.array([[-inner, face.eye_y - 0.02], [0.0, face.eye_y - 0.05], [inner, face.eye_y - 0.02]])
    shapes.append(Shape(bridge, frame, _CLASS["eyeglasses"], depth, line_width=width))
    return shapes


def _hat_shapes(identity: Identity) -> list[Shape]:
    if not identity.outfit.hat:
        return []
    face, hair, color = identity.face, identity.hair, identity.outfit.hat_color
    band_y = -0.62 * face.half_height
    half_width = face.half_width + (0.0 if hair.bald else hair.volume) + 0.1
    theta = np.linspace(np.pi, 2 * np.pi, 20)
    crown = np.stack([half_width * np.cos(theta), band_y + (0.55 + 0.45 * face.half_height) * np.sin(theta)], -1)
    band = np.array(
        [
            [-half_width - 0.04, band_y - 0.16],
            [half_width + 0.04, band_y - 0.16],
            [half_width + 0.04, band_y + 0.04],
            [-half_width - 0.04, band_y + 0.04],
        ]
    )
    return [
        Shape(crown, color, _CLASS["hat"], _DEPTH["hair"]),
        Shape(band, _scaled(color, 0.7), _CLASS["hat"], _DEPTH["hair"]),
    ]


def build_shapes(identity: Identity, expression: Expression) -> list[Shape]:
    """All primitives of a face in painting order (back to front); later shapes overwrite earlier ones."""
    return [
        *_back_hair_shapes(identity),
        *_body_shapes(identity),
        *_necklace_shapes(identity),
        *_ear_shapes(identity),
        *_skin_shapes(identity),
        *_facial_hair_shapes(identity, expression),
        *_nose_shapes(identity),
        *_eye_shapes(identity, expression),
        *_brow_shapes(identity, expression),
        *_mouth_shapes(identity, expression),
        *_front_hair_shapes(identity),
        *_earring_shapes(identity),
        *_glasses_shapes(identity),
        *_hat_shapes(identity),
    ]


# -------------------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class PoseTransform:
    """Maps canonical points (with a depth) to output pixels: yaw parallax, then roll, scale and translation."""

    cos_yaw: float
    sin_yaw: float
    linear: np.ndarray  # (2, 2)
    offset: np.ndarray  # (2,)
    pixels_per_unit: float

    @classmethod
    def from_pose(cls, pose: Pose, image_size: int) -> PoseTransform:
        pixels_per_unit = _FACE_SCALE * image_size * pose.scale
        cos, sin = math.cos(pose.roll), math.sin(pose.roll)
        linear = pixels_per_unit * np.array([[cos, -sin], [sin, cos]])
        centre = (np.array(_FACE_CENTRE) + np.array(pose.shift)) * image_size - 0.5  # pixel-centre convention
        return cls(math.cos(pose.yaw), math.sin(pose.yaw), linear, centre, pixels_per_unit)

    def __call__(self, points: np.ndarray, depth: float | np.ndarray) -> np.ndarray:
        # points: (N, 2) canonical -> (N, 2) pixels
        x = points[:, 0] * self.cos_yaw + np.asarray(depth) * self.sin_yaw
        return np.stack([x, points[:, 1]], axis=-1) @ self.linear.T + self.offset


def _draw_shape(draw: ImageDraw.ImageDraw, points: np.ndarray, fill: Color | int, line_width: float) -> None:
    """Draws one transformed primitive; `points` `(N, 2)` are in the pixel coordinates of `draw`'s image."""
    flat = points.ravel().tolist()
    if line_width > 0:
        draw.line(flat, fill=fill, width=max(1, int(round(line_width))), joint="curve")
    elif len(points) >= 3:
        draw.polygon(flat, fill=fill)


def _background(scene: Scene, size: int) -> Image.Image:
    """A two-colour gradient with a few flat shapes of background clutter, `size` pixels square."""
    ends = np.array(scene.background, dtype=np.uint8).reshape(2, 1, 3)  # top and bottom colours
    column = Image.fromarray(ends).resize((1, size), Image.Resampling.BILINEAR)
    image = column.resize((size, size), Image.Resampling.NEAREST)  # much faster than one bilinear resize
    draw = ImageDraw.Draw(image)
    for kind, box, color in scene.clutter:
        xy = (box * size).ravel().tolist()
        (draw.ellipse if kind == "ellipse" else draw.rectangle)(xy, fill=color)
    return image


def render(
    shapes: list[Shape], scene: Scene, transform: PoseTransform, image_size: int
) -> tuple[Image.Image, np.ndarray]:
    """Draws `shapes` into an RGB image (supersampled, then box-downsampled) and a class-id mask `(H, W)` uint8."""
    canvas_size = _SUPERSAMPLE * image_size
    canvas = _background(scene, canvas_size)
    mask = Image.new("L", (image_size, image_size), _CLASS["background"])
    image_draw, mask_draw = ImageDraw.Draw(canvas, "RGBA"), ImageDraw.Draw(mask)
    # one transform for all points: (total_points, 2) output pixels, split back per shape
    sizes = [len(shape.points) for shape in shapes]
    depths = np.repeat([shape.depth for shape in shapes], sizes)
    pixels = transform(np.concatenate([shape.points for shape in shapes]), depths)
    for shape, points in zip(shapes, np.split(pixels, np.cumsum(sizes)[:-1]), strict=True):
        width = shape.line_width * transform.pixels_per_unit
        # output pixel centre u lies at S * u + (S - 1) / 2 on the supersampled canvas
        _draw_shape(image_draw, points * _SUPERSAMPLE + (_SUPERSAMPLE - 1) / 2, shape.color, width * _SUPERSAMPLE)
        if shape.class_id is not None:
            _draw_shape(mask_draw, points, shape.class_id, width)
    return canvas.reduce(_SUPERSAMPLE), np.asarray(mask)


@functools.lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates `(size, size)` float32, and the cloth weave pattern `(size, size)`."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    weave = 5.0 * np.sign(np.sin(cols * 1.3) * np.sin(rows * 1.3))
    return np.stack([rows, cols]), weave.astype(np.float32)


def _texture(mask: np.ndarray, roll: float) -> np.ndarray:
    """Additive texture `(H, W)`: strands in the hair, a weave in the clothes, nothing elsewhere."""
    (rows, cols), weave = _pixel_grid(mask.shape[0])
    texture = np.where(mask == _CLASS["cloth"], weave, np.float32(0.0))
    hair = mask == _CLASS["hair"]
    across = cols[hair] * math.cos(roll) + rows[hair] * math.sin(roll)  # strands follow the head's roll
    texture[hair] = 14.0 * np.sin(across * (2 * math.pi / 3.1) + 2.0 * np.sin(rows[hair] * 0.11))
    return texture


def _apply_lighting(
    image: Image.Image, mask: np.ndarray, lighting: Lighting, roll: float, rng: np.random.Generator
) -> Image.Image:
    """Texture, brightness/contrast, colour cast, a directional shading gradient, sensor noise and optional blur."""
    pixels = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    size = pixels.shape[0]
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    cos, sin = math.cos(lighting.direction), math.sin(lighting.direction)
    shading = 1.0 + lighting.gradient * (ramp[None, :] * cos + ramp[:, None] * sin)  # (H, W)
    luminance = _texture(mask, roll) + rng.standard_normal(mask.shape, dtype=np.float32) * lighting.noise  # (H, W)
    gain = lighting.brightness * np.asarray(lighting.cast, dtype=np.float32)  # (3,)
    pixels = ((pixels - 128.0) * lighting.contrast + 128.0) * shading[..., None] * gain + luminance[..., None]
    result = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if lighting.blur > 0:
        result = result.filter(ImageFilter.GaussianBlur(lighting.blur))
    return result


# ------------------------------------------------------------------------------------------ attributes and captions


def celeba_attributes(identity: Identity, expression: Expression, blurry: bool) -> np.ndarray:
    """The 40 CelebA attributes `(40,)` int8 (1 / -1) in `CELEBA_ATTRIBUTES` order, as drawn."""
    face, hair, outfit = identity.face, identity.hair, identity.outfit
    has_hair = not hair.bald
    values = {
        "5_o_Clock_Shadow": hair.stubble,
        "Arched_Eyebrows": face.arched_eyebrows,
        "Attractive": identity.attractive,
        "Bags_Under_Eyes": face.bags_under_eyes,
        "Bald": hair.bald,
        "Bangs": hair.bangs,
        "Big_Lips": face.big_lips,
        "Big_Nose": face.big_nose,
        "Black_Hair": has_hair and hair.color_name == "black",
        "Blond_Hair": has_hair and hair.color_name == "blond",
        "Blurry": blurry,
        "Brown_Hair": has_hair and hair.color_name == "brown",
        "Bushy_Eyebrows": face.bushy_eyebrows,
        "Chubby": face.chubby,
        "Double_Chin": face.double_chin,
        "Eyeglasses": outfit.eyeglasses,
        "Goatee": hair.goatee,
        "Gray_Hair": has_hair and hair.color_name == "gray",
        "Heavy_Makeup": outfit.heavy_makeup,
        "High_Cheekbones": face.high_cheekbones,
        "Male": identity.male,
        "Mouth_Slightly_Open": expression.mouth_open > 0,
        "Mustache": hair.mustache,
        "Narrow_Eyes": face.narrow_eyes,
        "No_Beard": not (hair.full_beard or hair.goatee or hair.mustache),
        "Oval_Face": face.oval,
        "Pale_Skin": face.pale,
        "Pointy_Nose": face.pointy_nose,
        "Receding_Hairline": hair.receding,
        "Rosy_Cheeks": face.rosy_cheeks,
        "Sideburns": hair.sideburns,
        "Smiling": expression.smiling,
        "Straight_Hair": has_hair and not hair.wavy,
        "Wavy_Hair": has_hair and hair.wavy,
        "Wearing_Earrings": outfit.earrings,
        "Wearing_Hat": outfit.hat,
        "Wearing_Lipstick": outfit.lipstick,
        "Wearing_Necklace": outfit.necklace,
        "Wearing_Necktie": outfit.necktie,
        "Young": identity.young,
    }
    return np.array([1 if values[name] else -1 for name in CELEBA_ATTRIBUTES], dtype=np.int8)


def _join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption(identity: Identity, expression: Expression) -> str:
    """An English description, e.g. 'a photo of a smiling young woman with blond wavy hair wearing eyeglasses'."""
    hair, outfit = identity.hair, identity.outfit
    adjectives = ["smiling"] if expression.smiling else []
    adjectives += ["young" if identity.young else "older"] + (["bald"] if hair.bald else [])
    person = " ".join([*adjectives, "man" if identity.male else "woman"])
    details = [] if hair.bald else [f"{hair.color_name} {'wavy' if hair.wavy else 'straight'} hair"]
    details += ["bangs"] if hair.bangs else []
    details += ["a beard"] if hair.full_beard else ["a goatee"] if hair.goatee else []
    details += ["a mustache"] if hair.mustache and not hair.full_beard else []
    details += ["an open mouth"] if expression.mouth_open > 0 and not expression.smiling else []
    worn = [
        name
        for name, present in (
            ("eyeglasses", outfit.eyeglasses),
            ("a hat", outfit.hat),
            ("earrings", outfit.earrings),
            ("a necklace", outfit.necklace),
            ("a necktie", outfit.necktie),
            ("lipstick", outfit.lipstick),
        )
        if present
    ]
    article = "an" if person[0] in "aeiou" else "a"
    text = f"a photo of {article} {person}"
    text += f" with {_join(details)}" if details else ""
    text += f" wearing {_join(worn)}" if worn else ""
    return text


# --------------------------------------------------------------------------------------------------------- public API


class SyntheticFaces:
    """Procedural faces with parsing masks, landmarks, attributes, captions and identities; no data needed.

    Args:
        seed: selects the whole population; two seeds give unrelated datasets.
        image_size: side of the square images and masks, in pixels.
        num_identities: number of distinct synthetic people; sample `index` shows person `index % num_identities`.

    Example:

    ```python
    >>> faces = SyntheticFaces(seed=0, image_size=128)
    >>> sample = faces.sample(3)
    >>> sample["image"].size, sample["mask"].shape, sample["landmarks_68"].shape
    ((128, 128), (128, 128), (68, 2))

    ```
    """

    def __init__(self, seed: int = 0, image_size: int = 128, num_identities: int = 100) -> None:
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels to draw a face, got {image_size}.")
        if num_identities < 1:
            raise ValueError(f"num_identities must be positive, got {num_identities}.")
        if seed < 0:
            raise ValueError(f"seed must be non-negative (it seeds numpy's SeedSequence), got {seed}.")
        self.seed = seed
        self.image_size = image_size
        self.num_identities = num_identities
        self._identities: dict[int, Identity] = {}

    def identity_of(self, index: int) -> int:
        """The person shown by sample `index`."""
        return index % self.num_identities

    def identity(self, identity: int) -> Identity:
        """The (cached) appearance of person `identity`."""
        if identity not in self._identities:
            self._identities[identity] = sample_identity(self.seed, identity)
        return self._identities[identity]

    def sample(self, index: int) -> dict[str, Any]:
        """Sample `index`, a pure function of `(seed, index)`.

        Returns a dict with `image` (PIL RGB, `image_size` square), `mask` (`(H, W)` uint8, CelebAMask-HQ order-A ids),
        `mask_lapa` and `mask_helen` (`(H, W)` uint8, 11 classes), `landmarks_5` (`(5, 2)` float32, ArcFace order),
        `landmarks_68` (`(68, 2)` float32, iBUG order), `attributes` (`(40,)` int8 of 1/-1, CelebA order), `caption`,
        `identity` and `key`.
        """
        if index < 0:
            raise ValueError(f"index must be non-negative, got {index}.")
        identity_id = self.identity_of(index)
        identity = self.identity(identity_id)
        rng = np.random.default_rng([self.seed, _SAMPLE_STREAM, index])
        scene = _sample_scene(rng)
        transform = PoseTransform.from_pose(scene.pose, self.image_size)
        image, mask = render(build_shapes(identity, scene.expression), scene, transform, self.image_size)
        image = _apply_lighting(image, mask, scene.lighting, scene.pose.roll, rng)
        points, depth = landmarks_68(identity, scene.expression)
        points = transform(points, depth).astype(np.float32)  # (68, 2) pixels
        return {
            "image": image,
            "mask": mask,
            "mask_lapa": CELEBAMASK_TO_LAPA[mask],
            "mask_helen": CELEBAMASK_TO_HELEN[mask],
            "landmarks_5": landmarks_5_from_68(points),
            "landmarks_68": points,
            "attributes": celeba_attributes(identity, scene.expression, blurry=scene.lighting.blur > 0),
            "caption": caption(identity, scene.expression),
            "identity": identity_id,
            "key": f"{self.seed:04d}-{index:09d}",
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(index)


def _synthetic_examples(
    shards: list[int], num_shards: int, num_samples: int, seed: int, image_size: int, num_identities: int
) -> Iterator[dict[str, Any]]:
    """Generator for `datasets.IterableDataset.from_generator`: shard `s` yields indices s, s + num_shards, ..."""
    faces = SyntheticFaces(seed=seed, image_size=image_size, num_identities=num_identities)
    for shard in shards:
        for index in range(shard, num_samples, num_shards):
            sample = faces.sample(index)
            sample["image"] = _png(sample["image"])
            for name in ("mask", "mask_lapa", "mask_helen"):
                sample[name] = _png(Image.fromarray(sample[name]))  # (H, W) uint8 -> mode "L"
            yield sample


def _png(image: Image.Image) -> dict[str, bytes | None]:
    """`image` as `datasets.Image` stores it, PNG with fast compression (the default level costs 4x more time)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def synthetic_face_features() -> datasets.Features:
    """The `datasets.Features` of `synthetic_face_dataset`."""
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "mask": datasets.Image(mode="L"),
            "mask_lapa": datasets.Image(mode="L"),
            "mask_helen": datasets.Image(mode="L"),
            "landmarks_5": datasets.Array2D(shape=(5, 2), dtype="float32"),
            "landmarks_68": datasets.Array2D(shape=(68, 2), dtype="float32"),
            "identity": datasets.Value("int32"),
            "attributes": datasets.Sequence(datasets.Value("int8"), length=len(CELEBA_ATTRIBUTES)),
            "caption": datasets.Value("string"),
            "key": datasets.Value("string"),
        }
    )


def synthetic_face_dataset(
    num_samples: int, seed: int = 0, image_size: int = 128, num_identities: int = 100, num_shards: int = 8
) -> datasets.IterableDataset:
    """The synthetic faces as a streaming `datasets.IterableDataset` of `num_samples` examples in `num_shards` shards.

    Shard `s` holds the indices `s, s + num_shards, s + 2 * num_shards, ...` below `num_samples`, so the dataset splits
    over processes with `datasets.distributed.split_dataset_by_node` (by shard when `num_shards` is a multiple of the
    world size) and over DataLoader workers. Masks decode as PIL images of mode "L".

    `num_samples` is required: a single process reads shards one after another, so with an endless shard it would never
    leave shard 0. Pass a number larger than the run needs instead. Note that within a shard the identities repeat with
    period `num_identities / gcd(num_shards, num_identities)`; use `.shuffle(buffer_size=...)` or several DataLoader
    workers for a mix of all identities early on.
    """
    import datasets

    if num_samples < 1 or num_shards < 1:
        raise ValueError(f"num_samples and num_shards must be positive, got {num_samples} and {num_shards}.")
    if num_shards > num_samples:
        logger.warning("num_shards (%d) > num_samples (%d): some shards are empty.", num_shards, num_samples)
    gen_kwargs = {
        "shards": list(range(num_shards)),
        "num_shards": num_shards,
        "num_samples": num_samples,
        "seed": seed,
        "image_size": image_size,
        "num_identities": num_identities,
    }
    return datasets.IterableDataset.from_generator(
        _synthetic_examples, gen_kwargs=gen_kwargs, features=synthetic_face_features()
    )


__all__ = [
    "Identity",
    "SyntheticFaces",
    "build_shapes",
    "caption",
    "celeba_attributes",
    "landmarks_5_from_68",
    "landmarks_68",
    "sample_identity",
    "synthetic_face_dataset",
    "synthetic_face_features",
]
