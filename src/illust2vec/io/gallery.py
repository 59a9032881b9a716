"""A procedural gallery of anime-style characters, drawn with Pillow (``illust2vec demo``, int8 calibration).

Each character has a hair colour, hair style (long, twin tails, short,
ponytail, bob), fringe, eye colour, an accessory (ribbon, hat, cat ears,
glasses, hair clip or none), an outfit colour and a background; it is drawn
in several variants (slightly different pose, scale, expression and
background), like the original illustration2vec experiment's 25 characters x
3 face images.  Everything is deterministic for a given seed.  Images are
written one folder per character, so ``--label-by folder`` labels them, and
each image carries Danbooru-style tags of what was drawn ("pink hair",
"twintails", "cat ears", ...).
"""
from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from illust2vec.io.atomic import DurableBatch

RGB = tuple[int, int, int]

HAIR_COLORS: dict[str, RGB] = {
    "pink": (245, 140, 185), "blonde": (250, 215, 100), "silver": (200, 205, 215),
    "black": (45, 40, 55), "brown": (125, 80, 50), "red": (205, 45, 50),
    "blue": (70, 110, 215), "green": (80, 185, 120), "purple": (150, 90, 200),
    "orange": (245, 145, 55), "aqua": (80, 205, 210), "white": (245, 242, 235),
}
EYE_COLORS: dict[str, RGB] = {
    "blue": (40, 100, 220), "red": (210, 40, 50), "green": (40, 160, 80), "purple": (140, 60, 190),
    "yellow": (225, 180, 30), "brown": (120, 70, 35), "pink": (230, 90, 160), "aqua": (30, 180, 190),
}
HAIR_STYLES = ("long", "twintails", "short", "ponytail", "bob")
FRINGES = ("blunt", "side-swept", "parted")
ACCESSORIES = ("ribbon", "hat", "cat ears", "glasses", "hair clip", "none")
EXPRESSIONS = ("smile", "open mouth", "closed eyes", "neutral", "wink")
NAMES = (
    "akane", "aoi", "chika", "emi", "fuyuka", "hana", "hikari", "iroha", "kaede", "kokoro",
    "mai", "mio", "nanami", "natsuki", "rin", "sakura", "sora", "tsubasa", "ui", "yui",
    "yuzu", "asuka", "kasumi", "misaki", "nagisa", "riko", "shiori", "tomoe", "umi", "wakaba",
)
STYLE_TAGS = {"long": "long hair", "twintails": "twintails", "short": "short hair",
              "ponytail": "ponytail", "bob": "bob cut"}
FRINGE_TAGS = {"blunt": "blunt bangs", "side-swept": "swept bangs", "parted": "parted bangs"}
ACCESSORY_TAGS = {"ribbon": "hair ribbon", "hat": "hat", "cat ears": "cat ears", "glasses": "glasses",
                  "hair clip": "hairclip", "none": None}


@dataclass(frozen=True)
class Character:
    """The look of one character (what stays the same across its variants)."""

    name: str
    hair: str
    eyes: str
    style: str
    fringe: str
    accessory: str
    outfit: RGB
    accent: RGB
    background: RGB
    skin: RGB

    def tags(self) -> list[str]:
        out = [f"{self.hair} hair", f"{self.eyes} eyes", STYLE_TAGS[self.style], FRINGE_TAGS[self.fringe]]
        acc = ACCESSORY_TAGS[self.accessory]
        if acc:
            out.append(acc)
        return out


@dataclass
class GalleryItem:
    """One drawn image: its file, character and tags."""

    path: Path
    character: str
    variant: int
    tags: list[str] = field(default_factory=list)


def make_characters(n: int = 25, seed: int = 0) -> list[Character]:
    """``n`` distinct characters (hair colour, style and accessory combinations differ)."""
    rng = random.Random(seed)
    chars: list[Character] = []
    seen: set[tuple[str, str, str]] = set()
    hair_names = list(HAIR_COLORS)
    names = list(NAMES)
    rng.shuffle(names)
    while len(chars) < n:
        hair = hair_names[len(chars) % len(hair_names)] if len(chars) < len(hair_names) else rng.choice(hair_names)
        style = rng.choice(HAIR_STYLES)
        acc = rng.choice(ACCESSORIES)
        if (hair, style, acc) in seen:
            continue
        seen.add((hair, style, acc))
        bg_h = rng.random()
        bg = _hsv(bg_h, 0.18 + 0.12 * rng.random(), 0.95)
        i = len(chars)
        name = names[i % len(names)] + ("" if i < len(names) else f"-{i // len(names) + 1}")
        chars.append(Character(
            name=name, hair=hair, eyes=rng.choice(list(EYE_COLORS)), style=style,
            fringe=rng.choice(FRINGES), accessory=acc,
            outfit=_hsv(rng.random(), 0.45 + 0.3 * rng.random(), 0.55 + 0.35 * rng.random()),
            accent=_hsv(rng.random(), 0.7, 0.9), background=bg,
            skin=rng.choice([(255, 228, 210), (252, 222, 200), (255, 235, 222)]),
        ))
    return chars


def _hsv(h: float, s: float, v: float) -> RGB:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _shade(c: RGB, f: float) -> RGB:
    if f < 1:
        return tuple(int(x * f) for x in c)  # type: ignore[return-value]
    return tuple(int(x + (255 - x) * (f - 1)) for x in c)  # type: ignore[return-value]


def draw_character(ch: Character, variant: int = 0, *, size: int = 256, seed: int = 0) -> Image.Image:
    """Draw one variant of ``ch`` as an RGB image of ``size`` x ``size``.

    Variant 0 is the reference pose; others tilt, shift and scale the figure a
    little, change the expression and vary the background.
    """
    rng = random.Random(f"{seed}:{ch.name}:{variant}")
    S = 512  # drawn at 512 and downsampled (antialiasing)
    expression = "smile" if variant == 0 else rng.choice(EXPRESSIONS)
    angle = 0.0 if variant == 0 else rng.uniform(-10, 10)
    scale = 1.0 if variant == 0 else rng.uniform(0.88, 1.06)
    dx = 0 if variant == 0 else rng.randint(-30, 30)
    dy = 0 if variant == 0 else rng.randint(-20, 20)

    bg = Image.new("RGB", (S, S), ch.background)
    bd = ImageDraw.Draw(bg)
    pattern = (variant + zlib.crc32(ch.name.encode()) % 3) % 3
    alt = _shade(ch.background, 0.93 if variant % 2 else 1.04)
    if pattern == 0:
        for y in range(0, S, 48):
            bd.rectangle((0, y, S, y + 20), fill=alt)
    elif pattern == 1:
        for _ in range(14):
            x, y, r = rng.randint(0, S), rng.randint(0, S), rng.randint(10, 40)
            bd.ellipse((x - r, y - r, x + r, y + r), fill=alt)
    else:
        for y in range(S):
            t = y / S
            bd.line((0, y, S, y), fill=_shade(ch.background, 1.0 + 0.25 * t if variant % 2 else 1.0 - 0.12 * t))

    fig = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(fig)
    hair = HAIR_COLORS[ch.hair]
    hair_dark = _shade(hair, 0.72)
    eye = EYE_COLORS[ch.eyes]
    cx, cy = 256, 230  # face centre
    fw, fh = 150, 170  # face half-size: width, height of the face ellipse

    # --- back hair
    if ch.style == "long":
        d.rounded_rectangle((cx - 185, cy - 170, cx + 185, S + 40), radius=120, fill=hair_dark)
    elif ch.style == "bob":
        d.rounded_rectangle((cx - 180, cy - 175, cx + 180, cy + 150), radius=110, fill=hair_dark)
    elif ch.style == "twintails":
        for side in (-1, 1):
            x0 = cx + side * 190
            d.ellipse((x0 - 55, cy - 120, x0 + 55, S + 30), fill=hair_dark)
            d.ellipse((x0 - 40, cy - 110, x0 + 40, S), fill=hair)
        d.ellipse((cx - 170, cy - 175, cx + 170, cy + 90), fill=hair_dark)
    elif ch.style == "ponytail":
        d.ellipse((cx - 170, cy - 175, cx + 170, cy + 90), fill=hair_dark)
        d.polygon([(cx + 110, cy - 150), (cx + 220, cy - 60), (cx + 230, cy + 200), (cx + 150, S),
                   (cx + 120, cy + 60)], fill=hair_dark)
        d.polygon([(cx + 125, cy - 120), (cx + 200, cy - 50), (cx + 205, cy + 180), (cx + 150, S - 30),
                   (cx + 130, cy + 60)], fill=hair)
    else:  # short
        d.ellipse((cx - 168, cy - 178, cx + 168, cy + 70), fill=hair_dark)

    # --- body and neck
    d.polygon([(cx - 210, S), (cx - 150, cy + 200), (cx + 150, cy + 200), (cx + 210, S)], fill=ch.outfit)
    d.polygon([(cx - 40, cy + 200), (cx, cy + 260), (cx + 40, cy + 200)], fill=_shade(ch.outfit, 1.35))
    d.rectangle((cx - 35, cy + 120, cx + 35, cy + 205), fill=_shade(ch.skin, 0.92))
    # collar ribbon in the accent colour
    d.polygon([(cx - 28, cy + 235), (cx, cy + 250), (cx + 28, cy + 235), (cx + 28, cy + 265), (cx, cy + 250),
               (cx - 28, cy + 265)], fill=ch.accent)

    # --- face: ellipse plus a soft chin
    d.ellipse((cx - fw, cy - fh, cx + fw, cy + fh - 20), fill=ch.skin)
    d.polygon([(cx - fw + 12, cy + 40), (cx, cy + fh + 5), (cx + fw - 12, cy + 40)], fill=ch.skin)
    # ears (hidden by long hair styles, harmless)
    for side in (-1, 1):
        ex = cx + side * (fw - 4)
        d.ellipse((ex - 18, cy - 5, ex + 18, cy + 45), fill=ch.skin)

    # --- eyes
    ey = cy + 35
    for side in (-1, 1):
        ex = cx + side * 62
        closed = expression == "closed eyes" or (expression == "wink" and side == 1)
        if closed:
            d.arc((ex - 38, ey - 20, ex + 38, ey + 25), start=200, end=340, fill=(40, 30, 40), width=7)
            continue
        d.ellipse((ex - 36, ey - 42, ex + 36, ey + 42), fill=(255, 255, 255))
        d.ellipse((ex - 30, ey - 36, ex + 30, ey + 42), fill=eye)
        d.ellipse((ex - 26, ey - 6, ex + 26, ey + 40), fill=_shade(eye, 1.35))
        d.ellipse((ex - 14, ey - 16, ex + 14, ey + 18), fill=_shade(eye, 0.35))
        d.ellipse((ex - 24 * side - 4, ey - 30, ex - 24 * side + 12, ey - 12) if side < 0 else
                  (ex - 14, ey - 30, ex + 2, ey - 12), fill=(255, 255, 255))
        d.ellipse((ex + 8, ey + 14, ex + 16, ey + 22), fill=(255, 255, 255))
        d.line((ex - 42, ey - 38, ex, ey - 48, ex + 42, ey - 38), fill=(35, 25, 35), width=9, joint="curve")
        # eyebrow
        d.line((ex - 30, ey - 78, ex + 28, ey - 82), fill=hair_dark, width=6)

    # --- blush, nose, mouth
    if expression in ("smile", "closed eyes", "wink") or variant == 0:
        for side in (-1, 1):
            bx = cx + side * 95
            d.ellipse((bx - 28, ey + 50, bx + 28, ey + 68), fill=(255, 180, 185))
    d.line((cx, ey + 62, cx + 4, ey + 70), fill=_shade(ch.skin, 0.75), width=3)
    my = ey + 100
    if expression == "open mouth":
        d.ellipse((cx - 18, my - 12, cx + 18, my + 22), fill=(190, 60, 70))
        d.ellipse((cx - 10, my + 6, cx + 10, my + 20), fill=(240, 130, 140))
    elif expression == "neutral":
        d.line((cx - 14, my, cx + 14, my), fill=(150, 60, 60), width=4)
    else:
        d.arc((cx - 24, my - 22, cx + 24, my + 12), start=20, end=160, fill=(150, 50, 60), width=5)

    # --- front hair: cap and fringe
    d.chord((cx - 165, cy - 185, cx + 165, cy + 80), start=180, end=360, fill=hair)
    top = cy - 60
    if ch.fringe == "blunt":
        d.rectangle((cx - 150, top - 40, cx + 150, cy - 15), fill=hair)
        for i in range(7):
            x = cx - 150 + i * 50
            d.polygon([(x, cy - 20), (x + 25, cy + 5), (x + 50, cy - 20)], fill=hair)
    elif ch.fringe == "side-swept":
        d.polygon([(cx - 160, top - 30), (cx + 160, top - 50), (cx + 150, cy - 10), (cx + 60, cy - 30),
                   (cx - 40, cy - 5), (cx - 120, cy - 20), (cx - 158, cy + 30)], fill=hair)
    else:  # parted
        d.polygon([(cx - 160, top - 40), (cx - 8, top - 40), (cx - 20, cy - 70), (cx - 90, cy - 15),
                   (cx - 160, cy + 60)], fill=hair)
        d.polygon([(cx + 160, top - 40), (cx + 8, top - 40), (cx + 20, cy - 70), (cx + 90, cy - 15),
                   (cx + 160, cy + 60)], fill=hair)
    # side locks
    for side in (-1, 1):
        x = cx + side * 150
        d.polygon([(x, cy - 60), (x + side * 20, cy - 40), (x + side * 10, cy + 120), (x - side * 12, cy + 140)],
                  fill=hair)
    # shine on the hair
    d.arc((cx - 120, cy - 160, cx + 120, cy - 40), start=200, end=250, fill=_shade(hair, 1.4), width=8)

    # --- accessories
    acc = ch.accent
    if ch.accessory == "ribbon":
        rx, ry = cx + 110, cy - 150
        d.polygon([(rx, ry), (rx - 60, ry - 40), (rx - 55, ry + 35)], fill=acc)
        d.polygon([(rx, ry), (rx + 60, ry - 40), (rx + 55, ry + 35)], fill=acc)
        d.ellipse((rx - 15, ry - 15, rx + 15, ry + 15), fill=_shade(acc, 0.8))
    elif ch.accessory == "hat":
        d.ellipse((cx - 200, cy - 175, cx + 200, cy - 115), fill=_shade(acc, 0.7))
        d.chord((cx - 135, cy - 290, cx + 135, cy - 80), start=180, end=360, fill=acc)
        d.rectangle((cx - 135, cy - 170, cx + 135, cy - 150), fill=_shade(acc, 0.5))
    elif ch.accessory == "cat ears":
        for side in (-1, 1):
            x = cx + side * 110
            d.polygon([(x - 50, cy - 140), (x + side * 30, cy - 260), (x + 50, cy - 130)], fill=hair)
            d.polygon([(x - 28, cy - 148), (x + side * 24, cy - 228), (x + 28, cy - 140)], fill=(255, 180, 200))
    elif ch.accessory == "glasses":
        for side in (-1, 1):
            ex = cx + side * 62
            d.rounded_rectangle((ex - 48, ey - 40, ex + 48, ey + 40), radius=14, outline=(60, 40, 40), width=6)
        d.line((cx - 14, ey - 10, cx + 14, ey - 10), fill=(60, 40, 40), width=6)
    elif ch.accessory == "hair clip":
        x, y = cx - 115, cy - 70
        d.rounded_rectangle((x - 30, y - 8, x + 30, y + 8), radius=6, fill=acc)
        d.rounded_rectangle((x - 22, y + 16, x + 38, y + 32), radius=6, fill=_shade(acc, 0.8))

    fig = fig.rotate(angle, resample=Image.Resampling.BICUBIC, center=(cx, cy + 150))
    if scale != 1.0:
        ss = int(S * scale)
        fig = fig.resize((ss, ss), Image.Resampling.BICUBIC)
    ox = (S - fig.width) // 2 + dx
    oy = (S - fig.height) // 2 + dy + (S - fig.height) // 2
    bg.paste(fig, (ox, oy), fig)
    out = bg.resize((size, size), Image.Resampling.LANCZOS)
    if variant % 3 == 2:
        out = out.filter(ImageFilter.SMOOTH)
    return out


def image_tags(ch: Character, variant: int, seed: int = 0) -> list[str]:
    """Tags of one drawn image: the character's look plus its expression."""
    rng = random.Random(f"{seed}:{ch.name}:{variant}")
    expression = "smile" if variant == 0 else rng.choice(EXPRESSIONS)
    extra = {"smile": ["smile"], "open mouth": ["open mouth"], "closed eyes": ["closed eyes", "smile"],
             "wink": ["one eye closed", "smile"], "neutral": []}[expression]
    return ch.tags() + extra


def write_gallery(
    out_dir: Path | str,
    *,
    characters: int = 25,
    variants: int = 3,
    size: int = 256,
    seed: int = 0,
) -> list[GalleryItem]:
    """Draw ``characters`` x ``variants`` images into ``out_dir/<name>/<name>_<k>.png``.

    Also writes ``out_dir/tags.json`` (``{relative path: [tags]}``).  Returns the
    items in file order.  Every file is written whole (one :class:`DurableBatch`).
    """
    out_dir = Path(out_dir)
    items: list[GalleryItem] = []
    with DurableBatch() as batch:
        for ch in make_characters(characters, seed):
            for v in range(variants):
                path = out_dir / ch.name / f"{ch.name}_{v + 1}.png"
                with batch.open(path) as fh:
                    draw_character(ch, v, size=size, seed=seed).save(fh, format="PNG", optimize=False,
                                                                     compress_level=1)
                items.append(GalleryItem(path, ch.name, v, image_tags(ch, v, seed)))
        items.sort(key=lambda it: str(it.path))
        batch.write(out_dir / "tags.json",
                    json.dumps({it.path.relative_to(out_dir).as_posix(): it.tags for it in items}, indent=1))
    return items
