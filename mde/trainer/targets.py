"""Fitting the regression targets of Schindler et al.: TF-IDF then LSI over the training split.

:func:`fit_text_space` fits scikit-learn's ``TfidfVectorizer`` (smoothed idf, L2 rows, on the terms of
:func:`mde.runtime.text_space.terms`) and ``TruncatedSVD`` on the training documents only, and returns
the plain-array :class:`~mde.runtime.text_space.TextSpace` that maps any document, seen or new, into the
space. The seed's spaces have 340 topics; a smaller split gets fewer: at most one less than its terms and
no more than its documents (the rank of its TF-IDF matrix).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from mde.errors import MdeError
from mde.runtime.text_space import TextSpace, terms

DEFAULT_TOPICS = 340


def fit_text_space(documents: Sequence[str | Sequence[str]], kind: str, n_topics: int = DEFAULT_TOPICS,
                   seed: int = 0) -> TextSpace:
    """The space fitted on ``documents`` (the training split's tag sets or texts, one per track):
    ``min(n_topics, n_terms - 1, n_documents)`` topics, the SVD seeded with ``seed``."""
    if n_topics < 1:
        raise MdeError(f"a text space needs at least one topic, got {n_topics}")
    vectorizer = TfidfVectorizer(analyzer=lambda document: terms(document, kind), lowercase=False)
    matrix = vectorizer.fit_transform(list(documents)) if len(documents) else None
    if matrix is None or matrix.shape[1] < 2:
        raise MdeError(f"the training split's {kind} hold {0 if matrix is None else matrix.shape[1]} distinct "
                       "terms: a text space needs at least 2")
    topics = min(n_topics, matrix.shape[1] - 1, matrix.shape[0])
    svd = TruncatedSVD(n_components=topics, random_state=seed).fit(matrix)
    vocabulary = tuple(vectorizer.get_feature_names_out())
    return TextSpace(kind, vocabulary, vectorizer.idf_.astype(np.float64), svd.components_.astype(np.float64))
