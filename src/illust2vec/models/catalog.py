"""The model catalog: every known model, gathered from the families.

A record says which files a model needs and where they come from, how images
are prepared for it (:class:`~illust2vec.prep.preprocess.InputRecipe`), what it
outputs, how its tags are categorised and which thresholds it uses by default.
Adding a model is adding a record to its family's ``FAMILY``; adding a family
is adding its module to :data:`FAMILIES`.

>>> list_models("i2v-*")
['i2v-feature', 'i2v-tag']
"""
from __future__ import annotations

import fnmatch
from typing import Any

from illust2vec.errors import Illust2VecError, did_you_mean
from illust2vec.models.families import camie, cl_tagger, deepdanbooru, effnet, pixai, wd
from illust2vec.models.families.i2v import model as i2v
from illust2vec.models.spec import ModelFamily, ModelFile, ModelSpec

__all__ = ["FAMILIES", "MODELS", "ModelFamily", "ModelFile", "ModelSpec", "get_family", "file_checks", "get_spec",
           "list_models", "register", "spec_for_hub", "suggest_models"]

#: Family name -> record, in order of preference where several could read a file.
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (i2v.FAMILY, wd.FAMILY, pixai.FAMILY, camie.FAMILY, cl_tagger.FAMILY, deepdanbooru.FAMILY, effnet.FAMILY)}

MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a record to the catalog (a name can be registered once)."""
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    if spec.family not in FAMILIES:
        raise ValueError(f"model {spec.name!r}: unknown family {spec.family!r}")
    MODELS[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The record of a model by name; an unknown name lists the valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise Illust2VecError(
            f"unknown model {name!r}.{suggest_models(name)} Known models: {', '.join(sorted(MODELS))} "
            "('illust2vec models list')."
        ) from None


def suggest_models(name: str) -> str:
    """``" Did you mean wd-vit-v3?"`` for a mistyped model name or Hub repository id ("" when nothing is close).

    Compares with the zoo names and the Hub repositories of the zoo's records.
    """
    labels = {n: n for n in MODELS}
    labels.update({spec.hub: f"{spec.hub} ({spec.name})" for spec in MODELS.values() if spec.hub})
    return did_you_mean(name.split("@", 1)[0], labels)


def spec_for_hub(repo: str) -> ModelSpec | None:
    """The zoo record whose Hub repository is ``repo`` (``ORG/NAME``, any revision), if there is one."""
    repo_id = repo.split("@", 1)[0]
    return next((spec for spec in MODELS.values() if spec.hub == repo_id), None)


def get_family(name: str) -> ModelFamily:
    """The family record by name (``i2v``, ``wd``, ``effnet``)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise Illust2VecError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def file_checks() -> dict[str, Any]:
    """Every family's file parsers by name ending (for a file whose model is not known yet)."""
    return {ending: check for family in FAMILIES.values() for ending, check in family.file_checks.items()}


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a shell-style wildcard, sorted."""
    return sorted(n for n in MODELS if fnmatch.fnmatchcase(n, pattern))


for _family in FAMILIES.values():
    for _spec in _family.specs:
        register(_spec)
del _family, _spec
