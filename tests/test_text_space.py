"""TF-IDF + LSI target spaces (Schindler et al.): numpy's transform against scikit-learn's, the seed's
340 topics capped by the vocabulary, terms of tag sets and of multilingual text, and the saved arrays."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from mde.errors import MdeError
from mde.runtime.text_space import TextSpace, terms
from mde.trainer.targets import DEFAULT_TOPICS, fit_text_space

TEXTS = [
    "A slow piano piece, quiet and sad.",
    "Fast drums and loud electric guitar.",
    "Ein langsames Klavierstück, leise und traurig.",
    "Schnelles Schlagzeug und laute E-Gitarre.",
    "Quiet strings with a slow flute.",
    "Loud synth bass with fast drums.",
]
TAGS = [["piano", "slow", "quiet"], ["drums", "guitar", "loud", "fast"], ["piano", "slow"],
        ["drums", "fast"], ["strings", "flute", "slow", "quiet"], ["synth", "bass", "drums", "no drums"]]


def test_terms_of_tag_sets_and_of_text():
    assert terms("Piano|no drums| slow", "tags") == ["piano", "no drums", "slow"]
    assert terms(["bass"], "tags") == ["bass"]
    found = terms("Leise Klänge", "text")
    assert {"w:leise", "w:klänge", "w:leise klänge", "c: le", "c:änge ", "c:klän"} <= set(found)
    assert "w:a" not in terms("a b cd", "text")  # words of two or more letters, as scikit-learn's default
    with pytest.raises(MdeError, match="unknown target kind 'words'"):
        terms("x", "words")


@pytest.mark.parametrize("kind, documents", [("text", TEXTS), ("tags", TAGS)])
def test_the_numpy_transform_is_scikit_learns(kind, documents):
    train, new = documents[:4], documents[4:]
    space = fit_text_space(train, kind, n_topics=3, seed=0)
    vectorizer = TfidfVectorizer(analyzer=lambda d: terms(d, kind), lowercase=False)
    matrix = vectorizer.fit_transform(train)
    svd = TruncatedSVD(n_components=3, random_state=0).fit(matrix)
    np.testing.assert_allclose(space.tfidf(new), vectorizer.transform(new).toarray(), atol=1e-12)
    np.testing.assert_allclose(space.transform(new), svd.transform(vectorizer.transform(new)), atol=1e-6)
    assert space.transform(new).dtype == np.float32 and space.n_topics == 3


def test_the_space_follows_the_training_split_and_caps_its_topics():
    space = fit_text_space(TAGS[:4], "tags")
    assert DEFAULT_TOPICS == 340 and space.n_topics == 4  # 4 documents of 7 terms: rank 4
    assert fit_text_space(TAGS, "tags", n_topics=50).n_topics == 6 and fit_text_space(
        [["a"], ["b"], ["c"], ["a", "b"]], "tags").n_topics == 2  # 3 terms
    assert "strings" not in space.vocabulary  # a test-only tag is not a term
    points = space.transform(TAGS[:4])
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    similar = unit @ unit.T
    assert similar[0, 2] > 0.7 and abs(similar[0, 1]) < 0.1  # shared tags close, disjoint ones orthogonal
    assert not space.transform([["unheard"]]).any()
    with pytest.raises(MdeError, match="hold 1 distinct terms"):
        fit_text_space([["piano"], ["piano"]], "tags")
    with pytest.raises(MdeError, match="at least one topic"):
        fit_text_space(TAGS, "tags", n_topics=0)


def test_a_saved_space_loads_without_pickle_and_maps_the_same(tmp_path):
    space = fit_text_space(TEXTS, "text", n_topics=4)
    space.save(tmp_path / "space.npz")
    loaded = TextSpace.load(tmp_path / "space.npz")
    assert loaded.kind == "text" and loaded.vocabulary == space.vocabulary
    np.testing.assert_array_equal(loaded.transform(TEXTS), space.transform(TEXTS))
    (tmp_path / "bad.npz").write_bytes(b"not an archive")
    with pytest.raises(MdeError, match=r"bad\.npz: not a saved text space"):
        TextSpace.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", kind=np.array("text"), vocabulary=np.array(["a", "b"]), idf=np.ones(3),
             components=np.ones((1, 2)))
    with pytest.raises(MdeError, match="inconsistent arrays"):
        TextSpace.load(tmp_path / "short.npz")


def test_a_model_file_carries_the_space_as_base64_and_refuses_one_without_its_head():
    import json

    from mde.errors import ModelError
    from mde.runtime.package import ModelInfo

    space = fit_text_space(TEXTS, "text", n_topics=4)
    text = space.to_base64()
    again = TextSpace.from_base64(text)
    assert again.vocabulary == space.vocabulary
    np.testing.assert_allclose(again.transform(TEXTS), space.transform(TEXTS), atol=1e-6)  # topics in float32
    with pytest.raises(MdeError, match=r"m\.onnx: text space: not base64"):
        TextSpace.from_base64("not base64!", "m.onnx: text space")
    with pytest.raises(MdeError, match="not a saved text space"):
        TextSpace.from_base64("aGVsbG8=")
    info = dict(name="m", architecture="SchindlerCNN", source="s", licence="l", sample_rate=16000,
                window_samples=16000, hop_samples=16000, input_kind="waveform", framing="audio_windows",
                frontend=None, embedding_dim=4, tags_output=None, outputs={"embedding": 4, "target_text": 4})
    assert ModelInfo.from_json(ModelInfo(**info, text_spaces={"text": text}).to_json()).text_spaces == {"text": text}
    data = json.loads(ModelInfo(**info, text_spaces={"tags": text}).to_json())
    with pytest.raises(ModelError, match="text_spaces: no output target_tags for the 'tags' space"):
        ModelInfo.from_json(json.dumps(data), "m.onnx")
