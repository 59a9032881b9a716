"""Which oracle pictures this machine's Pillow decodes and resizes as the oracle's Pillow did.

The imgutils oracles (tests/fixtures/{camie,pixai,deepdanbooru}/oracle.json) were computed with
Pillow 13.0.0.  Both imgutils and illust2vec decode and resize with Pillow, so on another Pillow
they agree with each other but not always with the recorded numbers: Pillow 12.3 (the newest for
Python 3.10) resizes a 300x700 picture to 512x512 to slightly different pixels than 13.0 (seen:
probabilities 1.4e-3 apart on that picture, every other picture within 1.5e-6).  That is the image
library, not the model code.  Each oracle records a SHA-256 per picture of what Pillow made of it
(the decoded pixels and their resizes to the families' input sizes, bilinear and bicubic:
``decoded``); the parity tests compare outputs only where this machine gives the same digest, and
require that nearly all pictures are compared.

Recording (once, in the environment the oracle was made in)::

    .venv/bin/python tests/oracle_pixels.py tests/fixtures/camie/oracle.json
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from conftest import ANIME36
from PIL import Image, features

ODD = Path(__file__).parent / "fixtures" / "kohya" / "images"


def picture(key: str) -> Path:
    """The file of an oracle key (``anime36/00.jpg`` or ``odd/odd_rgba.png``)."""
    folder, name = key.split("/", 1)
    return (ANIME36 if folder == "anime36" else ODD) / name


#: The input sizes of the families with imgutils oracles (PixAI 448, Camie and DeepDanbooru 512).
PROBE_SIZES = ((448, 448), (512, 512))


def decoded_sha256(path: Path) -> str:
    """SHA-256 of what Pillow makes of the picture: its decoded pixels (no EXIF rotation) and their
    RGB resizes to :data:`PROBE_SIZES`, bilinear and bicubic."""
    with Image.open(path) as im:
        im.load()
        digest = hashlib.sha256(f"{im.mode} {im.size}".encode())
        digest.update(im.tobytes())
        rgb = im.convert("RGB")
    for size in PROBE_SIZES:
        for resample in (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC):
            digest.update(rgb.resize(size, resample).tobytes())
    return digest.hexdigest()


def compared_keys(oracle: dict) -> list[str]:
    """The oracle's picture keys this machine decodes as the oracle did (sorted).

    Fails if more than a few pictures have to be left out (on the oracle's own Pillow, none is).
    """
    want = oracle["decoded"]["sha256"]
    keys = sorted(oracle["pictures"])
    differ = [k for k in keys if decoded_sha256(picture(k)) != want[k]]
    assert len(differ) <= 3, f"{len(differ)} pictures decode or resize differently here: {differ}"
    if differ:
        print(f"left out (Pillow {Image.__version__} decodes or resizes them differently than the "
              f"oracle's {oracle['decoded']['pillow']}): {', '.join(differ)}")
    return [k for k in keys if k not in differ]


def record(oracle_path: Path) -> None:
    """Write the digests of the oracle's pictures as this environment decodes them into the oracle."""
    oracle = json.loads(oracle_path.read_text(encoding="utf-8"))
    oracle["decoded"] = {"pillow": Image.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"),
                         "sha256": {k: decoded_sha256(picture(k)) for k in sorted(oracle["pictures"])}}
    oracle_path.write_text(json.dumps(oracle, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        record(Path(arg))
