"""``mde index`` / ``mde search``: nearest-neighbour search over the clip and frame embeddings of many files.

Modules, one job each: :mod:`~mde.search.vectors` (a file's vectors; the staging area), :mod:`~mde.search.manifest`
(what an index holds), :mod:`~mde.search.storage` (the folder layout and atomic versions),
:mod:`~mde.search.faiss_kinds` (exact or IVF faiss indexes), :mod:`~mde.search.build` (creating and updating),
:mod:`~mde.search.index` (querying). Part of the serving path: no torch; faiss comes with the ``search`` extra.

    from mde.search import Index
    Index.build(["songs/"], "idx", model="MTT_musicnn")
    Index.open("idx").search("query.mp3", k=10, frames=True)
"""

from mde.search.index import Hit, Index

__all__ = ["Hit", "Index"]
