"""illustration2vec (Saito & Matsui, 2015): its zoo records, the Caffe import and the drop-in API.

:class:`Illustration2Vec` is an :class:`~illust2vec.models.image_model.ImageModel`
with the original project's constructor (``from_caffemodel``);
``make_i2v_with_chainer``/``make_i2v_with_caffe`` are the original factory calls.
A ``.caffemodel`` is converted to ONNX once and cached in the model store.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from illust2vec.errors import Illust2VecError
from illust2vec.models.families.i2v.caffe.net import read_caffemodel  # the wire reader: light, no onnx
from illust2vec.models.fetch import require_files
from illust2vec.models.image_model import ImageModel, with_engine
from illust2vec.models.spec import ModelFamily, ModelFile, ModelSpec
from illust2vec.models.store import ModelStore
from illust2vec.models.tags import I2V_LAYOUT, TagTable, load_thresholds
from illust2vec.prep.preprocess import I2V_RECIPE, InputRecipe

__all__ = ["FAMILY", "Illustration2Vec", "import_caffemodel", "load_i2v", "make_i2v_with_caffe",
           "make_i2v_with_chainer"]

#: Bump when the Caffe converter changes what it writes (invalidates cached graphs).
CAFFE_CONVERTER_VERSION = 1

I2V_RELEASE = "https://github.com/rezoo/illustration2vec/releases/download/v2.0.0/"

#: How the files of this family are checked before they count as present (a broken download is refused).
FILE_CHECKS = {".caffemodel": read_caffemodel, ".json": TagTable.from_i2v_json, ".json.gz": TagTable.from_i2v_json}


class Illustration2Vec(ImageModel):
    """illustration2vec on ONNX Runtime (no Chainer, no Caffe)."""

    @classmethod
    def from_caffemodel(
        cls,
        weights: str | os.PathLike,
        tags: str | os.PathLike | None = None,
        *,
        thresholds: str | os.PathLike | None = None,
        outputs: Mapping[str, str] | None = None,
        recipe: InputRecipe = I2V_RECIPE,
        model_dir: str | os.PathLike | None = None,
        name: str | None = None,
        **options: Any,
    ) -> Illustration2Vec:
        """Import an i2v ``.caffemodel`` (converted once, then cached in the model store).

        ``outputs`` maps graph outputs to Caffe blobs; by default a net with an
        ``encode1`` blob is a feature extractor (``{"feature": "encode1"}``) and
        one with a ``prob`` blob a tagger (``{"prob": "prob"}``).
        """
        onnx_path, identity = import_caffemodel(weights, outputs=outputs, input_size=recipe.size, model_dir=model_dir)
        table = TagTable.from_i2v_json(tags, I2V_LAYOUT) if tags is not None else None
        calibrated = load_thresholds(thresholds, len(table)) if thresholds is not None and table else None
        options.setdefault("optimized_cache", onnx_path.parent / "ort")
        return cls(
            onnx_path, recipe=recipe, tags=table, name=name or Path(weights).name, identity=identity,
            calibrated_thresholds=calibrated, **with_engine(options),
        )


def _default_caffe_outputs(net) -> dict[str, str]:
    blobs = {t for layer in net.layers for t in layer.tops}
    if "encode1" in blobs:
        return {"feature": "encode1"}
    if "prob" in blobs:
        return {"prob": "prob"}
    raise Illust2VecError(
        "cannot tell whether this caffemodel is a tagger or a feature extractor; "
        "pass outputs={'prob': BLOB} or {'feature': BLOB}"
    )


def import_caffemodel(
    weights: str | os.PathLike,
    *,
    outputs: Mapping[str, str] | None = None,
    input_size: tuple[int, int] = I2V_RECIPE.size,
    model_dir: str | os.PathLike | None = None,
) -> tuple[Path, str]:
    """Convert a ``.caffemodel`` to ONNX once and cache it; return ``(onnx_path, identity)``.

    The cache key is the file's SHA-256 (memoised by path, size and mtime), the
    requested outputs and the input size, so a second load skips the import.
    """
    # the converter needs onnx (about a second to import): loaded only when a caffemodel is converted
    from illust2vec.models.families.i2v.caffe.to_onnx import caffe_to_onnx

    weights = Path(weights)
    store = ModelStore(model_dir)
    if not weights.is_file():
        raise Illust2VecError(f"{weights}: no such caffemodel file")
    digest = store.content_hash(weights)
    net = None
    if outputs is None:
        net = read_caffemodel(weights)
        outputs = _default_caffe_outputs(net)
    spec = "-".join(f"{k}={v}" for k, v in sorted(outputs.items()))
    key = f"caffe-{digest[:24]}-{spec}-{input_size[0]}x{input_size[1]}-c{CAFFE_CONVERTER_VERSION}"

    def build() -> bytes:
        source = net if net is not None else read_caffemodel(weights)
        return caffe_to_onnx(source, dict(outputs), input_size=input_size).SerializeToString()

    return store.cached_onnx(key, build), f"sha256:{digest}"



def load_i2v(spec: ModelSpec, store: ModelStore, *, download: bool = False, offline: bool | None = None,
             progress: bool = True, **options: Any) -> ImageModel:
    """Build an i2v zoo model: the caffemodel from the store, converted once and cached."""
    files = require_files(spec, store, download=download, offline=offline, progress=progress,
                          checks=FILE_CHECKS)
    onnx_path, identity = import_caffemodel(
        files["weights"], outputs=dict(spec.source_outputs), input_size=spec.recipe.size, model_dir=store.root,
    )
    table = TagTable.from_i2v_json(files["tags"], spec.tag_layout) if "tags" in files else None
    options.setdefault("optimized_cache", store.onnx_dir / "ort")
    return Illustration2Vec(
        onnx_path, recipe=spec.recipe, tags=table, name=spec.name, identity=identity,
        thresholds=spec.thresholds or None, binarize=spec.binarize, **with_engine(options),
    )


# -- drop-in replacements for illustration2vec's factory functions -----------

def make_i2v_with_chainer(
    param_path: str | os.PathLike, tag_path: str | os.PathLike | None = None,
    threshold_path: str | os.PathLike | None = None, **options: Any,
) -> Illustration2Vec:
    """Same call as ``i2v.make_i2v_with_chainer``; runs on ONNX Runtime.

    Transparency is dropped, as the original does; pass ``alpha="white"`` to
    composite onto white instead.

    >>> import illust2vec as i2v                              # doctest: +SKIP
    >>> model = i2v.make_i2v_with_chainer("illust2vec_tag_ver200.caffemodel", "tag_list.json")
    """
    options.setdefault("alpha", "drop")
    return Illustration2Vec.from_caffemodel(param_path, tags=tag_path, thresholds=threshold_path, **options)


def make_i2v_with_caffe(
    net_path: str | os.PathLike, param_path: str | os.PathLike, tag_path: str | os.PathLike | None = None,
    threshold_path: str | os.PathLike | None = None, **options: Any,
) -> Illustration2Vec:
    """Same call as ``i2v.make_i2v_with_caffe``; the ``.prototxt`` is not needed (the caffemodel has the net)."""
    return make_i2v_with_chainer(param_path, tag_path, threshold_path, **options)


FAMILY = ModelFamily(
    name="i2v",
    specs=(
        ModelSpec(
            name="i2v-tag",
            family="i2v",
            description="illustration2vec v2.0.0 tag estimator: 1539 Danbooru tags (512 general, 512 character, "
                        "512 copyright, 3 rating)",
            files=(
                ModelFile("illust2vec_tag_ver200.caffemodel", "weights", I2V_RELEASE + "illust2vec_tag_ver200.caffemodel"),
                ModelFile("tag_list.json.gz", "tags", I2V_RELEASE + "tag_list.json.gz"),
            ),
            recipe=I2V_RECIPE,
            outputs=("prob",),
            license="MIT (code); model weights per the illustration2vec release",
            homepage="https://github.com/rezoo/illustration2vec",
            source_outputs={"prob": "prob"},
            tag_layout=I2V_LAYOUT,
            thresholds={"default": 0.25},
            n_tags=1539,
        ),
        ModelSpec(
            name="i2v-feature",
            family="i2v",
            description="illustration2vec v2.0.0 feature extractor: 4096-d semantic features (encode1) and 4096-bit codes",
            files=(
                ModelFile("illust2vec_ver200.caffemodel", "weights", I2V_RELEASE + "illust2vec_ver200.caffemodel"),
            ),
            recipe=I2V_RECIPE,
            outputs=("feature",),
            license="MIT (code); model weights per the illustration2vec release",
            homepage="https://github.com/rezoo/illustration2vec",
            source_outputs={"feature": "encode1"},
            binarize="positive",
            feature_dim=4096,
        ),
    ),
    load=load_i2v,
    tag_readers={".json": TagTable.from_i2v_json, ".gz": TagTable.from_i2v_json},
    file_checks=FILE_CHECKS,
)
