"""One entry point from ``--dataset KIND --data PATH`` to a :class:`TaggingDataset`."""

from __future__ import annotations

from pathlib import Path

from mde.errors import MdeError
from mde.trainer.data.dataset import TaggingDataset
from mde.trainer.data.gtzan import load_gtzan
from mde.trainer.data.manifest import load_manifest
from mde.trainer.data.msd import load_msd
from mde.trainer.data.mtat import load_mtat

DATASET_KINDS = ("mtat", "gtzan", "manifest", "msd")


def load_dataset(
    kind: str, data: Path, *, single_label: bool = False, merge_synonyms: bool = False, top_k: int = 50,
    mtat_split: str = "sota",
) -> TaggingDataset:
    """Read a dataset of kind 'mtat' (folder), 'gtzan' (folder), 'manifest' (CSV file) or 'msd' (folder: the
    Million Song Dataset with its AMG tag sets, see :mod:`mde.trainer.data.msd`).

    ``top_k`` keeps the most frequent tags (mtat, manifest, msd); ``merge_synonyms`` merges MagnaTagATune's
    synonymous tags before that and ``mtat_split`` chooses its split, 'sota' or 'random' (mtat only; see
    :mod:`mde.trainer.data.mtat`); ``single_label`` reads a manifest as one class per clip
    (GTZAN always is, MagnaTagATune never). An option that does not apply to ``kind`` is an error.
    """
    data = Path(data)
    if kind == "mtat":
        _refuse(kind, single_label=single_label)
        return load_mtat(data, merge_synonyms=merge_synonyms, top_k=top_k, split=mtat_split)
    if kind == "gtzan":
        _refuse(kind, merge_synonyms=merge_synonyms, mtat_split=mtat_split != "sota")
        return load_gtzan(data)
    if kind == "manifest":
        _refuse(kind, merge_synonyms=merge_synonyms, mtat_split=mtat_split != "sota")
        return load_manifest(data, single_label=single_label, top_k=top_k)
    if kind == "msd":
        _refuse(kind, single_label=single_label, merge_synonyms=merge_synonyms, mtat_split=mtat_split != "sota")
        return load_msd(data, top_k=top_k)
    raise MdeError(f"unknown dataset {kind!r}; choose one of {', '.join(DATASET_KINDS)}")


def _refuse(kind: str, **options: bool) -> None:
    """Raise MdeError if a flag that ``kind`` does not support is set."""
    for name, value in options.items():
        if value:
            raise MdeError(f"--{name.replace('_', '-')} does not apply to --dataset {kind}")
