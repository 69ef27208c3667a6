"""Class labels read off a captioned dataset: the class a caption names, and BiBadDiff's p_t
measured on a poisoned dataset from its captions and its poison manifest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def caption_label(caption: str, class_names: Sequence[str]) -> int | None:
    """Index of the class named in the caption (whole words, longest name first), or None:
    :func:`alignscope.train.classifier.named_class`, the rule the classifiers label a test set
    by, as an index into ``class_names``."""
    from alignscope.train.classifier import named_class

    name = named_class(caption, class_names)
    return None if name is None else list(class_names).index(name)


def p_t_from_manifest(manifest: str | Path, target_class: str, class_names: Sequence[str]) -> float:
    """BiBadDiff's p_t measured on a poisoned dataset: of the rows whose caption names the
    target class, the fraction that carry a trigger (poisoned rows relabelled as the target).

    The dataset is the manifest's folder (``alignscope poison`` writes it there)."""
    from alignscope.io.datasets import open_dataset
    from alignscope.io.manifest import read_manifest

    table = read_manifest(manifest, ("written_as", "poisoned", "target_concept"))
    poisoned_ids = {
        name
        for name, flag, target in zip(
            table["written_as"], table["poisoned"], table["target_concept"], strict=True
        )
        if flag and target == target_class
    }
    if not poisoned_ids:
        raise ValueError(
            f"the poison manifest {str(manifest)!r} relabels no row as {target_class!r}"
        )
    target = class_names.index(target_class)
    labelled = [
        r.id
        for r in open_dataset(Path(manifest).parent)
        if caption_label(r.caption, class_names) == target
    ]
    carrying = sum(1 for i in labelled if i in poisoned_ids)
    if not carrying:
        raise ValueError(
            f"no record of {str(Path(manifest).parent)!r} that names {target_class!r} matches a "
            "poisoned row of its manifest: give p_t (--p-t) yourself"
        )
    return carrying / len(labelled)
