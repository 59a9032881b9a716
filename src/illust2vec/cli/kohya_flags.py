"""kohya-ss' tagger flags, accepted by ``illust2vec tag`` as aliases of its own options.

``finetune/tag_images_by_wd14_tagger.py`` spells its options with underscores
(``--caption_extension``, ``--general_threshold``...).  Each spelling here is an alias with
kohya-ss' meaning, hidden from ``--help``; :data:`KOHYA_FLAGS` is the table the
documentation prints (flag, the illust2vec option, how the meaning differs without
``--compat kohya``).  Flags that configure captions also turn ``--captions`` on: kohya-ss'
script always writes caption files.

>>> sorted(KOHYA_FLAGS)[:3]
['--always_first_tags', '--append_tags', '--batch_size']
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from illust2vec.errors import Illust2VecError

__all__ = ["KOHYA_DEFAULT_REPO", "KOHYA_FLAGS", "add_kohya_aliases", "kohya_model_files", "kohya_threshold"]

#: kohya-ss' default ``--repo_id``.
KOHYA_DEFAULT_REPO = "SmilingWolf/wd-v1-4-convnext-tagger-v2"

#: kohya-ss flag -> (illust2vec option, what differs from kohya-ss without ``--compat kohya``).
KOHYA_FLAGS: dict[str, tuple[str, str]] = {
    "--thresh": ("--threshold + --threshold-compare ge", "kohya-ss' default is 0.35 for every category (WD models "
                 "here: 0.35 general, 0.85 character); a value above 1 turns the categories off"),
    "--general_threshold": ("--general + --threshold-compare ge", "a value above 1 turns general tags off"),
    "--character_threshold": ("--character + --threshold-compare ge", "a value above 1 turns character tags off"),
    "--copyright_threshold": ("--copyright + --threshold-compare ge", "a value above 1 turns copyright tags off"),
    "--caption_extension": ("--caption-ext", "same; image and data extensions are refused"),
    "--caption_extention": ("--caption-ext", "kohya-ss' old spelling"),
    "--caption_separator": ("--separator", "same"),
    "--undesired_tags": ("--exclude", "split on the separator without its spaces, as kohya-ss does; "
                         "illust2vec's --exclude also takes wildcards"),
    "--always_first_tags": ("--always-first", "split on the separator without its spaces; kohya-ss puts the last "
                            "one listed first (only with --compat kohya)"),
    "--tag_replacement": ("--replace", "SOURCE,TARGET;SOURCE,TARGET with \\, and \\; escapes"),
    "--remove_underscore": ("--underscores (off) + tags of 3 characters or fewer keep theirs",
                            "illust2vec writes spaces by default; kohya-ss keeps underscores unless this is given"),
    "--batch_size": ("--batch-size", "same"),
    "--max_data_loader_n_workers": ("--workers", "decode processes"),
    "--repo_id": ("--model", "a Hugging Face repository id"),
    "--model_dir": ("--weights DIR/ORG_NAME/model.onnx --tag-list DIR/ORG_NAME/selected_tags.csv",
                    "kohya-ss' own model folder (not illust2vec's store, which is --model-dir)"),
    "--recursive": ("(default)", "illust2vec searches folders recursively unless --no-recursive; kohya-ss "
                    "does not unless --recursive"),
    "--append_tags": ("--if-exists append", "with --compat kohya the old caption is rewritten normalised"),
    "--use_rating_tags": ("--rating first", "with --compat kohya the always-first tags come before it"),
    "--use_rating_tags_as_last_tag": ("--rating last", "same"),
    "--character_tags_first": ("--character-first", "with --compat kohya in the reverse of the tag file's order"),
    "--character_tag_expand": ("--expand-characters", "illust2vec writes name and series as two tags; kohya-ss as "
                               "one NAME<sep>SERIES tag (only with --compat kohya)"),
    "--frequency_tags": ("--frequency-tags", "prints 'Tag frequencies:' and 'tag: count' lines on stdout"),
    "--onnx": ("(always)", "illust2vec always runs ONNX models"),
    "--force_download": ("--download", "fetches what is missing; nothing is fetched again"),
}

#: Flags that configure captions, so they turn ``--captions`` on as kohya-ss always writes them.
_CAPTION_FLAGS = {"--caption_extension", "--caption_extention", "--caption_separator", "--undesired_tags",
                  "--always_first_tags", "--tag_replacement", "--remove_underscore", "--append_tags",
                  "--use_rating_tags", "--use_rating_tags_as_last_tag", "--character_tags_first",
                  "--character_tag_expand", "--frequency_tags"}


def kohya_threshold(text: str) -> float:
    """argparse type of kohya-ss' thresholds: a number from 0; above 1 keeps no tag (a category off)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"{text} is negative (a threshold is from 0 to 1; above 1 turns a category off)")
    return value


class _Alias(argparse.Action):
    """Stores a value (or ``const``) in ``dest``; caption flags also set ``captions``; ``also`` sets more."""

    def __init__(self, option_strings, dest, *, also: dict[str, Any] | None = None, append: bool = False,
                 **kwargs) -> None:
        self.also = also or {}
        self.append = append
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        value = self.const if self.nargs == 0 else values
        if self.append:
            value = [*(getattr(namespace, self.dest, None) or []), value]
        setattr(namespace, self.dest, value)
        for name, extra in self.also.items():
            setattr(namespace, name, extra)
        if option_string in _CAPTION_FLAGS:
            namespace.captions = True


def add_kohya_aliases(parser: argparse.ArgumentParser) -> None:
    """Register :data:`KOHYA_FLAGS` on ``tag``'s parser (hidden from ``--help``)."""
    hidden = argparse.SUPPRESS

    def alias(flags: list[str], dest: str, **kw: Any) -> None:
        if kw.get("nargs") == 0:
            kw.setdefault("const", True)
        parser.add_argument(*flags, dest=dest, action=_Alias, help=hidden, default=argparse.SUPPRESS, **kw)

    at_least = {"threshold_compare": "ge"}  # kohya-ss keeps p >= threshold
    alias(["--thresh"], "threshold", type=kohya_threshold, metavar="P", also=at_least)
    alias(["--general_threshold"], "general", type=kohya_threshold, metavar="P", also=at_least)
    alias(["--character_threshold"], "character", type=kohya_threshold, metavar="P", also=at_least)
    alias(["--copyright_threshold"], "copyright", type=kohya_threshold, metavar="P", also=at_least)
    alias(["--caption_extension", "--caption_extention"], "caption_ext", metavar="EXT")
    alias(["--caption_separator"], "separator", metavar="TEXT")
    alias(["--undesired_tags"], "kohya_exclude", append=True, metavar="TAGS")
    alias(["--always_first_tags"], "kohya_always_first", append=True, metavar="TAGS")
    alias(["--tag_replacement"], "kohya_replace", append=True, metavar="PAIRS")
    alias(["--remove_underscore"], "underscores", nargs=0, const=False, also={"keep_underscores_in": "short"})
    alias(["--batch_size"], "batch_size", type=int, metavar="N")
    alias(["--max_data_loader_n_workers"], "workers", type=int, metavar="N")
    alias(["--repo_id"], "model", metavar="ORG/NAME")
    alias(["--model_dir"], "kohya_model_dir", type=Path, metavar="DIR")
    alias(["--recursive"], "recursive", nargs=0, const=True)
    alias(["--append_tags"], "caption_mode", nargs=0, const="append")
    alias(["--use_rating_tags"], "kohya_rating_first", nargs=0)
    alias(["--use_rating_tags_as_last_tag"], "kohya_rating_last", nargs=0)
    alias(["--character_tags_first"], "character_first", nargs=0)
    alias(["--character_tag_expand"], "expand_characters", nargs=0)
    alias(["--frequency_tags"], "frequency_tags", nargs=0)
    alias(["--onnx"], "kohya_onnx", nargs=0)
    alias(["--force_download"], "download", nargs=0)


def kohya_model_files(args: argparse.Namespace) -> tuple[Path, Path] | None:
    """``(model.onnx, selected_tags.csv)`` of kohya-ss' ``--model_dir`` layout, or ``None`` without it.

    kohya-ss keeps a repository's files in ``MODEL_DIR/ORG_NAME`` (``/`` replaced by ``_``);
    ``--repo_id`` (``--model``) names the repository, kohya-ss' default when omitted.
    """
    root = getattr(args, "kohya_model_dir", None)
    if root is None:
        return None
    repo = getattr(args, "model", None) or KOHYA_DEFAULT_REPO
    folder = Path(root) / repo.replace("/", "_")
    onnx, tags = folder / "model.onnx", folder / "selected_tags.csv"
    if not onnx.is_file() or not tags.is_file():
        raise Illust2VecError(f"--model_dir {root}: no model.onnx and selected_tags.csv in {folder} (kohya-ss' layout "
                              f"MODEL_DIR/ORG_NAME for --repo_id {repo}); or use -m {repo} for the Hugging Face cache")
    return onnx, tags


