"""Builds the embedded sample dataset (``ssl_jax/data/sample/``) in the WikiChurches layout.

    python -m ssl_jax.io.dataset.make_sample [OUT_DIR]      # default: rewrite ssl_jax/data/sample/

How it is made — deterministic (numpy ``default_rng(SEED)``, Pillow drawing, JPEG quality 90):

- 48 procedurally drawn church façades, 12 per style, 224-400 px on a side with varied aspect
  ratios, each with its own sky, ground, trees, wall colour and proportions. Each style has
  the features it is known by, drawn so a classifier can tell the styles apart:

  * Romanesque — warm sandstone, small round-arch windows, a round-arch portal with archivolt
    rings, a Lombard band of small arches under the gable, often a squat tower with a low
    pyramid roof.
  * Gothic — grey ashlar, tall pointed (lancet) windows, a tracery rose window, a pointed
    portal under a wimperg, buttresses with pinnacles, twin towers with spires.
  * Renaissance — pale cream, rectangular windows under triangular pediments, pilasters, a
    cornice and a crowning pediment, sometimes a dome behind.
  * Baroque — ochre/pink, oval windows, a segmental-pediment portal, a curved gable with
    volutes, often a dome with a lantern.

  Every drawn feature is recorded as an expert-style box (fractions of the image, rounded to
  6 decimals as in the real file), in groups like the real ``bbox_groups``: e.g. a Gothic
  portal group holds the portal and its wimperg, a tower group holds tower, spire and
  pinnacles, a Renaissance window group holds the window and its pediment. 5 façades per style
  are annotated (the evaluation subset); the other 7 appear only in ``churches.json``, so the
  fine-tuning split (which excludes annotated images) has 28 images to train and validate on.
- The photograph of the Tower of Buddhist Incense that scikit-learn ships
  (``sklearn.datasets.load_sample_image("china.jpg")``, downscaled to 320x214) with
  hand-placed boxes for the tower, its eaves tiers, the gallery and the finial. Its style is not
  one of the four, so it is an annotated image without a style label.
- Label-rule cases: one annotated Romanesque façade also carries Gothic (two styles, as 3 real
  images do), and one unannotated church lists an unmapped style first (unlabelled under the
  first-style rule, Gothic under the all-styles rule).

Image ids are invented QIDs with a leading zero (``Q00001_wd0.jpg`` ...), which Wikidata never
issues, so they cannot be mistaken for real churches; the four style QIDs are the real ones.
The feature ontology (``meta``) is the sample's own small one (21 types, real names).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ssl_jax.core.styles import STYLE_QIDS

SEED = 20261123
PER_STYLE = 12
ANNOTATED_PER_STYLE = 5
UNMAPPED_STYLE = "Q00099"  # stands for a style outside the four (e.g. "Gothic Revival")

META: list[tuple[str, list[int]]] = [
    ("Window", []), ("Portal", []), ("Tower", []),  # 0-2
    ("Round Arch Window", [0]), ("Pointed Arch Window", [0]), ("Tracery Rose Window", [0]),  # 3-5
    ("Round Arch Portal", [1]), ("Pointed Arch Portal", [1]), ("Lombard Band", []),  # 6-8
    ("Buttress", []), ("Pinnacle", []), ("Wimperg", []), ("Triangular Pediment", []),  # 9-12
    ("Segmental Pediment", []), ("Pilaster", []), ("Oval Window", [0]), ("Volute", []),  # 13-16
    ("Dome", []), ("Spire", [2]), ("Eaves", []), ("Finial", []), ("Gallery", [])]  # 17-21
F = {name: i for i, (name, _) in enumerate(META)}
WALLS = {"Q46261": (196, 160, 112), "Q176483": (150, 150, 158), "Q236122": (228, 218, 192),
         "Q840829": (232, 176, 142)}


def _shade(c, f: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(v * f, 0, 255)) for v in c)  # type: ignore[return-value]


class Canvas:
    """An RGB drawing with the boxes drawn so far, grouped like ``bbox_groups``."""

    def __init__(self, w: int, h: int, rng: np.random.Generator):
        self.w, self.h, self.rng = w, h, rng
        sky = np.array([105, 150, 210]) + rng.integers(-20, 21, 3)
        grad = np.linspace(0, 1, h)[:, None, None]
        arr = np.clip(sky + grad * np.array([70, 60, 30]), 0, 255) * np.ones((1, w, 1))
        self.im = Image.fromarray(arr.astype(np.uint8), "RGB")
        self.d = ImageDraw.Draw(self.im)
        for _ in range(int(rng.integers(1, 4))):  # clouds
            cx, cy = rng.uniform(0, w), rng.uniform(0, h * 0.3)
            rx, ry = rng.uniform(20, 50), rng.uniform(6, 14)
            self.d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(236, 238, 242))
        self.ground_y = int(h * rng.uniform(0.86, 0.93))
        ground = _shade((96, 122, 74), rng.uniform(0.85, 1.15))
        self.d.rectangle([0, self.ground_y, w, h], fill=ground)
        self.groups: list[tuple[int, list[tuple[int, tuple[float, float, float, float]]]]] = []

    def group(self, label: str, *elements: tuple[str, tuple[float, float, float, float]]) -> None:
        """Record one bbox group of (feature, (x0, y0, x1, y1) pixels) elements."""
        out = []
        for feat, (x0, y0, x1, y1) in elements:
            x0, x1 = max(0.0, min(x0, x1)), min(float(self.w), max(x0, x1))
            y0, y1 = max(0.0, min(y0, y1)), min(float(self.h), max(y0, y1))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                out.append((F[feat], (x0, y0, x1, y1)))
        if out:
            self.groups.append((F[label], out))

    def trees(self) -> None:
        for _ in range(int(self.rng.integers(0, 3))):
            side = self.rng.choice([0.0, 1.0])
            cx = self.w * (side + self.rng.uniform(-0.05, 0.08) * (1 - 2 * side))
            r = self.rng.uniform(0.08, 0.15) * self.w
            cy = self.ground_y - r * 0.7
            green = _shade((60, 100, 52), self.rng.uniform(0.8, 1.2))
            self.d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=green)

    def finish(self) -> Image.Image:
        im = self.im.filter(ImageFilter.GaussianBlur(0.5))
        noise = self.rng.normal(0, 5, (self.h, self.w, 1))
        arr = np.clip(np.asarray(im, np.float64) + noise, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "RGB")


def _round_window(cv: Canvas, x, y, w, h, fill) -> tuple[float, float, float, float]:
    cv.d.rectangle([x, y + w / 2, x + w, y + h], fill=fill)
    cv.d.pieslice([x, y, x + w, y + w], 180, 360, fill=fill)
    return x, y, x + w, y + h


def _pointed_window(cv: Canvas, x, y, w, h, fill) -> tuple[float, float, float, float]:
    cv.d.rectangle([x, y + w * 0.8, x + w, y + h], fill=fill)
    cv.d.polygon([(x, y + w * 0.8), (x + w / 2, y), (x + w, y + w * 0.8)], fill=fill)
    return x, y, x + w, y + h


def _gable(cv: Canvas, x0, x1, y, rise, fill) -> None:
    cv.d.polygon([(x0, y), ((x0 + x1) / 2, y - rise), (x1, y)], fill=fill)


def _romanesque(cv: Canvas, wall, dark, x0, y0, fw, fh) -> None:
    rng, y1 = cv.rng, cv.ground_y
    rise = fh * rng.uniform(0.18, 0.26)
    _gable(cv, x0, x0 + fw, y0, rise, wall)
    cv.d.line([(x0, y0), (x0 + fw / 2, y0 - rise), (x0 + fw, y0)], fill=_shade(wall, 0.7), width=3)
    # Lombard band: small arches along the gable foot
    n = max(5, int(fw // 16))
    aw = fw / n
    for i in range(n):
        cv.d.arc([x0 + i * aw, y0 + 2, x0 + (i + 1) * aw, y0 + aw], 0, 180, fill=dark, width=2)
    cv.group("Lombard Band", ("Lombard Band", (x0, y0, x0 + fw, y0 + aw / 2 + 4)))
    # portal with archivolt rings
    pw, ph = fw * rng.uniform(0.18, 0.24), fh * rng.uniform(0.34, 0.42)
    px = x0 + (fw - pw) / 2
    for k, f in enumerate((0.75, 0.55, 0.3)):
        e = (2 - k) * 4
        _round_window(cv, px - e, y1 - ph - e, pw + 2 * e, ph + e, _shade(wall, f))
    cv.group("Round Arch Portal", ("Round Arch Portal", (px - 8, y1 - ph - 8, px + pw + 8, y1)))
    # small round-arch windows
    ww, wh = fw * rng.uniform(0.05, 0.07), fh * rng.uniform(0.16, 0.22)
    wy = y0 + fh * rng.uniform(0.22, 0.3)
    elems = []
    for side in (-1, 1):
        for k in range(int(rng.integers(1, 3))):
            cx = x0 + fw / 2 + side * fw * (0.3 + 0.14 * k)
            if x0 + 4 < cx - ww / 2 and cx + ww / 2 < x0 + fw - 4:
                elems.append(("Round Arch Window", _round_window(cv, cx - ww / 2, wy, ww, wh, dark)))
    cv.group("Round Arch Window", *elems)
    if rng.random() < 0.6:  # squat tower with a low pyramid roof
        tw = fw * rng.uniform(0.2, 0.26)
        tx = x0 + fw - tw * 0.7 if rng.random() < 0.5 else x0 - tw * 0.3
        th = fh * rng.uniform(0.4, 0.6)
        ty = y0 - th
        cv.d.rectangle([tx, ty, tx + tw, y1], fill=_shade(wall, 0.93))
        roof = fh * rng.uniform(0.1, 0.16)
        cv.d.polygon([(tx - 3, ty), (tx + tw / 2, ty - roof), (tx + tw + 3, ty)], fill=(150, 80, 60))
        _round_window(cv, tx + tw * 0.35, ty + th * 0.12, tw * 0.3, th * 0.25, dark)
        cv.group("Tower", ("Tower", (tx - 3, ty - roof, tx + tw + 3, y1)))


def _gothic(cv: Canvas, wall, dark, x0, y0, fw, fh) -> None:
    rng, y1 = cv.rng, cv.ground_y
    rise = fh * rng.uniform(0.35, 0.5)
    _gable(cv, x0, x0 + fw, y0, rise, wall)
    # buttresses with pinnacles
    bw = fw * 0.05
    for bx in (x0 + fw * 0.22 - bw / 2, x0 + fw * 0.78 - bw / 2):
        cv.d.rectangle([bx, y0 + fh * 0.1, bx + bw, y1], fill=_shade(wall, 0.82))
        ptop = y0 - fh * 0.12
        cv.d.polygon([(bx, y0 + fh * 0.1), (bx + bw / 2, ptop), (bx + bw, y0 + fh * 0.1)],
                     fill=_shade(wall, 0.7))
        cv.group("Buttress", ("Buttress", (bx, y0 + fh * 0.1, bx + bw, y1)),
                 ("Pinnacle", (bx, ptop, bx + bw, y0 + fh * 0.1)))
    # pointed portal under a wimperg
    pw, ph = fw * rng.uniform(0.16, 0.2), fh * rng.uniform(0.4, 0.48)
    px = x0 + (fw - pw) / 2
    _pointed_window(cv, px - 5, y1 - ph - 5, pw + 10, ph + 5, _shade(wall, 0.6))
    _pointed_window(cv, px, y1 - ph, pw, ph, dark)
    wimp_top = y1 - ph - fh * rng.uniform(0.14, 0.2)
    cv.d.line([(px - 8, y1 - ph + pw * 0.3), (px + pw / 2, wimp_top), (px + pw + 8, y1 - ph + pw * 0.3)],
              fill=_shade(wall, 0.55), width=3)
    cv.group("Pointed Arch Portal", ("Pointed Arch Portal", (px - 5, y1 - ph - 5, px + pw + 5, y1)),
             ("Wimperg", (px - 8, wimp_top, px + pw + 8, y1 - ph + pw * 0.3)))
    # rose window with tracery
    r = fw * rng.uniform(0.1, 0.13)
    cx, cy = x0 + fw / 2, y0 - rise * 0.15
    cv.d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=dark)
    for a in np.linspace(0, np.pi, 6, endpoint=False):
        cv.d.line([(cx - r * np.cos(a), cy - r * np.sin(a)), (cx + r * np.cos(a), cy + r * np.sin(a))],
                  fill=wall, width=2)
    cv.d.ellipse([cx - r * 0.3, cy - r * 0.3, cx + r * 0.3, cy + r * 0.3], outline=wall, width=2)
    cv.group("Tracery Rose Window", ("Tracery Rose Window", (cx - r, cy - r, cx + r, cy + r)))
    # lancet windows
    ww, wh = fw * 0.06, fh * rng.uniform(0.38, 0.48)
    elems = [("Pointed Arch Window", _pointed_window(cv, x0 + fw * f - ww / 2, y0 + fh * 0.18, ww, wh, dark))
             for f in (0.1, 0.34, 0.66, 0.9)]
    cv.group("Pointed Arch Window", *elems)
    # twin towers with spires
    tw = fw * rng.uniform(0.17, 0.21)
    for tx in (x0 - tw * 0.75, x0 + fw - tw * 0.25):
        th = fh * rng.uniform(0.45, 0.6)
        ty = y0 - th
        cv.d.rectangle([tx, ty, tx + tw, y1], fill=_shade(wall, 0.9))
        _pointed_window(cv, tx + tw * 0.3, ty + th * 0.1, tw * 0.4, th * 0.45, dark)
        sh = min(fh * rng.uniform(0.4, 0.6), ty - 3)
        cv.d.polygon([(tx, ty), (tx + tw / 2, ty - sh), (tx + tw, ty)], fill=_shade(wall, 0.55))
        cv.group("Tower", ("Tower", (tx, ty - sh, tx + tw, y1)), ("Spire", (tx, ty - sh, tx + tw, ty)))


def _pediment_window(cv: Canvas, x, y, w, h, wall, dark, kind: str):
    cv.d.rectangle([x - 2, y - 2, x + w + 2, y + h + 2], fill=_shade(wall, 1.08))
    cv.d.rectangle([x, y, x + w, y + h], fill=dark)
    if kind == "Triangular Pediment":
        cv.d.polygon([(x - 4, y - 3), (x + w / 2, y - 3 - w * 0.35), (x + w + 4, y - 3)],
                     fill=_shade(wall, 0.8))
    else:
        cv.d.chord([x - 4, y - 3 - w * 0.35, x + w + 4, y - 3 + w * 0.35], 180, 360,
                   fill=_shade(wall, 0.8))
    return (x - 2, y - 2, x + w + 2, y + h + 2), (x - 4, y - 3 - w * 0.35, x + w + 4, y - 3)


def _renaissance(cv: Canvas, wall, dark, x0, y0, fw, fh) -> None:
    rng, y1 = cv.rng, cv.ground_y
    if rng.random() < 0.5:  # dome behind
        dr = fw * rng.uniform(0.16, 0.2)
        dx, dy = x0 + fw / 2, y0 - fh * 0.2
        cv.d.rectangle([dx - dr * 0.8, dy, dx + dr * 0.8, y0], fill=_shade(wall, 0.9))
        cv.d.pieslice([dx - dr, dy - dr, dx + dr, dy + dr], 180, 360, fill=(120, 130, 140))
        cv.group("Dome", ("Dome", (dx - dr, dy - dr, dx + dr, y0)))
    rise = fh * rng.uniform(0.16, 0.22)
    cv.d.rectangle([x0 - 4, y0 - 6, x0 + fw + 4, y0], fill=_shade(wall, 0.85))  # cornice
    _gable(cv, x0, x0 + fw, y0 - 6, rise, _shade(wall, 0.95))
    cv.d.line([(x0, y0 - 6), (x0 + fw / 2, y0 - 6 - rise), (x0 + fw, y0 - 6)], fill=_shade(wall, 0.75), width=3)
    cv.group("Triangular Pediment", ("Triangular Pediment", (x0 - 4, y0 - 6 - rise, x0 + fw + 4, y0)))
    n = int(rng.integers(4, 7))
    elems = []
    for i in range(n):
        x = x0 + fw * (0.04 + 0.92 * i / (n - 1))
        cv.d.rectangle([x - 3, y0 + 4, x + 3, y1], fill=_shade(wall, 1.1))
        elems.append(("Pilaster", (x - 3, y0 + 4, x + 3, y1)))
    cv.group("Pilaster", *elems)
    pw, ph = fw * rng.uniform(0.16, 0.2), fh * rng.uniform(0.32, 0.4)
    px = x0 + (fw - pw) / 2
    _, ped = _pediment_window(cv, px, y1 - ph, pw, ph, wall, dark, "Triangular Pediment")
    cv.group("Portal", ("Portal", (px - 2, y1 - ph - 2, px + pw + 2, y1)), ("Triangular Pediment", ped))
    ww, wh = fw * rng.uniform(0.09, 0.11), fh * rng.uniform(0.16, 0.2)
    for side in (-1, 1):
        for wy in (y0 + fh * 0.18, y0 + fh * 0.55):
            wx = x0 + fw / 2 + side * fw * 0.28 - ww / 2
            win, ped = _pediment_window(cv, wx, wy, ww, wh, wall, dark, "Triangular Pediment")
            cv.group("Window", ("Window", win), ("Triangular Pediment", ped))


def _baroque(cv: Canvas, wall, dark, x0, y0, fw, fh) -> None:
    rng, y1 = cv.rng, cv.ground_y
    trim = (245, 240, 228)
    if rng.random() < 0.7:  # dome with lantern
        dr = fw * rng.uniform(0.17, 0.22)
        dx, dy = x0 + fw / 2, y0 - fh * 0.3
        cv.d.rectangle([dx - dr * 0.75, dy, dx + dr * 0.75, y0], fill=_shade(wall, 0.9))
        cv.d.pieslice([dx - dr, dy - dr, dx + dr, dy + dr], 180, 360, fill=(92, 124, 112))
        lh = dr * 0.5
        cv.d.rectangle([dx - dr * 0.12, dy - dr - lh, dx + dr * 0.12, dy - dr + 2], fill=trim)
        cv.group("Dome", ("Dome", (dx - dr, dy - dr - lh, dx + dr, y0)))
    # curved gable with volutes
    gh = fh * rng.uniform(0.22, 0.3)
    gx0, gx1 = x0 + fw * 0.18, x0 + fw * 0.82
    cv.d.chord([gx0, y0 - gh, gx1, y0 + gh], 180, 360, fill=wall, outline=trim, width=3)
    vr = fw * 0.06
    vols = []
    for vx in (gx0 - vr, gx1 - vr):
        cv.d.ellipse([vx, y0 - 2 * vr, vx + 2 * vr, y0], fill=wall, outline=trim, width=3)
        cv.d.arc([vx + vr * 0.5, y0 - 1.5 * vr, vx + vr * 1.5, y0 - 0.5 * vr], 0, 300, fill=dark, width=2)
        vols.append(("Volute", (vx, y0 - 2 * vr, vx + 2 * vr, y0)))
    cv.group("Volute", *vols)
    cv.d.rectangle([x0 - 4, y0 - 3, x0 + fw + 4, y0 + 4], fill=trim)  # entablature
    # paired columns
    for f in (0.06, 0.12, 0.88, 0.94):
        x = x0 + fw * f
        cv.d.rectangle([x - 3, y0 + 6, x + 3, y1], fill=trim)
    # portal under a segmental pediment
    pw, ph = fw * rng.uniform(0.17, 0.21), fh * rng.uniform(0.34, 0.42)
    px = x0 + (fw - pw) / 2
    _, ped = _pediment_window(cv, px, y1 - ph, pw, ph, trim, dark, "Segmental Pediment")
    cv.group("Portal", ("Portal", (px - 2, y1 - ph - 2, px + pw + 2, y1)), ("Segmental Pediment", ped))
    # oval windows
    ow, oh = fw * rng.uniform(0.08, 0.1), fh * rng.uniform(0.13, 0.17)
    elems = []
    for side in (-1, 1):
        ox, oy = x0 + fw / 2 + side * fw * 0.28 - ow / 2, y0 + fh * rng.uniform(0.22, 0.3)
        cv.d.ellipse([ox - 3, oy - 3, ox + ow + 3, oy + oh + 3], fill=trim)
        cv.d.ellipse([ox, oy, ox + ow, oy + oh], fill=dark)
        elems.append(("Oval Window", (ox - 3, oy - 3, ox + ow + 3, oy + oh + 3)))
    cv.group("Oval Window", *elems)


DRAW = {"Q46261": _romanesque, "Q176483": _gothic, "Q236122": _renaissance, "Q840829": _baroque}


def facade(style: str, rng: np.random.Generator) -> tuple[Image.Image, list]:
    """One façade of `style` → (image, [(group label, [(label, (x0, y0, x1, y1)), ...]), ...])."""
    tall = style == "Q176483"
    w = int(rng.integers(256, 385))
    h = int(rng.integers(300, 401)) if tall else int(rng.integers(224, 361))
    cv = Canvas(w, h, rng)
    wall = _shade(WALLS[style], rng.uniform(0.92, 1.08))
    dark = _shade(wall, rng.uniform(0.28, 0.38))
    fw = w * rng.uniform(0.48, 0.62)
    fh = (cv.ground_y) * rng.uniform(0.42, 0.5)
    x0 = (w - fw) / 2 + rng.uniform(-0.04, 0.04) * w
    y0 = cv.ground_y - fh
    cv.d.rectangle([x0, y0, x0 + fw, cv.ground_y], fill=wall)
    DRAW[style](cv, wall, dark, x0, y0, fw, fh)
    cv.trees()
    return cv.finish(), _norm(cv)


def _norm(cv: Canvas) -> list:
    return [(g, [(lab, (x0 / cv.w, y0 / cv.h, (x1 - x0) / cv.w, (y1 - y0) / cv.h))
                 for lab, (x0, y0, x1, y1) in els]) for g, els in cv.groups]


def china() -> tuple[Image.Image, list]:
    """scikit-learn's china.jpg at 320x214 with hand-placed boxes (fractions of the image)."""
    from sklearn.datasets import load_sample_image

    im = Image.fromarray(load_sample_image("china.jpg")).resize((320, 214), Image.BICUBIC)

    def b(x0, y0, x1, y1):  # placed on a 640x428 view of the downscaled photo
        return (x0 / 640, y0 / 428, (x1 - x0) / 640, (y1 - y0) / 428)

    groups = [
        (F["Tower"], [(F["Tower"], b(62, 28, 366, 396))]),
        (F["Eaves"], [(F["Eaves"], b(94, 56, 322, 140)), (F["Eaves"], b(82, 154, 332, 194)),
                      (F["Eaves"], b(62, 240, 354, 286)), (F["Eaves"], b(200, 322, 366, 390))]),
        (F["Gallery"], [(F["Gallery"], b(78, 282, 346, 346))]),
        (F["Finial"], [(F["Finial"], b(194, 28, 218, 64))]),
    ]
    return im, groups


def _bbox_groups(groups: list) -> list[dict]:
    return [{"group_label": g, "elements": [
        {"left": round(x, 6), "top": round(y, 6), "width": round(w, 6), "height": round(h, 6),
         "label": lab} for lab, (x, y, w, h) in els]} for g, els in groups]


def build(out: Path) -> dict:
    """Write the sample into `out` (images/, building_parts.json, churches.json)."""
    rng = np.random.default_rng(SEED)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for old in images.glob("*.jpg"):
        old.unlink()
    annotations: dict[str, dict] = {}
    churches: dict[str, dict] = {}
    n = 0
    for i in range(PER_STYLE):
        for style in STYLE_QIDS:
            n += 1
            qid = f"Q{n:05d}"
            im, groups = facade(style, rng)
            im.save(images / f"{qid}_wd0.jpg", quality=90)
            styles = [style]
            if i == 0 and style == STYLE_QIDS[0]:
                styles = [style, STYLE_QIDS[1]]  # two styles (first one counts)
            church_styles = list(styles)
            if i == PER_STYLE - 1 and style == STYLE_QIDS[1]:
                church_styles = [UNMAPPED_STYLE, style]  # unlabelled under the first-style rule
            if i < ANNOTATED_PER_STYLE:
                annotations[f"{qid}_wd0.jpg"] = {"styles": styles, "bbox_groups": _bbox_groups(groups)}
            churches[qid] = {"id": qid, "name": f"Sample façade {n}", "built_year": None,
                             "styles": church_styles, "country": {"id": "Q00000", "name": "Sample"},
                             "location": None}
    qid = "Q00000"
    im, groups = china()
    im.save(images / f"{qid}_wd0.jpg", quality=90)
    annotations[f"{qid}_wd0.jpg"] = {"styles": [UNMAPPED_STYLE], "bbox_groups": _bbox_groups(groups)}
    churches[qid] = {"id": qid, "name": "Tower of Buddhist Incense (scikit-learn china.jpg)",
                     "built_year": None, "styles": [UNMAPPED_STYLE],
                     "country": {"id": "Q00000", "name": "Sample"}, "location": None}
    parts = {"meta": [{"name": name, "parents": p} for name, p in META],
             "annotations": dict(sorted(annotations.items()))}
    (out / "building_parts.json").write_text(json.dumps(parts, separators=(",", ":")) + "\n")
    (out / "churches.json").write_text(json.dumps(dict(sorted(churches.items())), indent=1,
                                                  ensure_ascii=False) + "\n", encoding="utf-8")
    return parts


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    target = Path(argv[0]) if argv else Path(__file__).resolve().parent / "sample"
    parts = build(target)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    n_boxes = sum(len(g["elements"]) for a in parts["annotations"].values() for g in a["bbox_groups"])
    n_img = len(list((target / "images").glob("*.jpg")))
    print(f"{n_img} images ({len(parts['annotations'])} annotated, {n_boxes} boxes), "
          f"{size / 1e6:.2f} MB in {target}")


if __name__ == "__main__":
    main()
