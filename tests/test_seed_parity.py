"""End to end: importing the seed's real checkpoints and embedding the real MTAT clip reproduces
the original pipeline's outputs (reference/joram_fcn05.npz, joram_fcn29.npz)."""


import numpy as np
import pytest
from conftest import FCN05_CKPT, MTAT_CLIP

pytest.importorskip("torch")


@pytest.mark.parametrize("arch, reference", [("fcn05", "joram_fcn05.npz"), ("fcn29", "joram_fcn29.npz")])
def test_embedding_the_mtat_clip_reproduces_the_seed(seed_models, shared_data, arch, reference):
    from mde.runtime.extractor import load_model

    ref = np.load(shared_data / "reference" / reference)
    result = load_model(seed_models[arch], threads=1).embed(shared_data / MTAT_CLIP)
    np.testing.assert_array_equal(np.round(result.timestamps * 16000).astype(np.int64), ref["starts"])
    assert list(result.tag_names) == list(ref["tag_names"])
    emb_err = np.abs(result.embedding - ref["embedding"]).max()
    tag_err = np.abs(result.tags - ref["tags"]).max()
    assert emb_err <= 2e-3, f"embedding max |diff| {emb_err:.2e}"
    assert tag_err <= 1e-4, f"tags max |diff| {tag_err:.2e}"


def test_cli_imports_and_tags_with_the_seed_model(shared_data, tmp_path):
    from test_cli import run_mde

    home = tmp_path / "home"
    proc = run_mde("import", "seed", shared_data / FCN05_CKPT, "--name", "my-fcn05", cwd=tmp_path, home=home)
    assert proc.returncode == 0, proc.stderr
    assert "stored my-fcn05" in proc.stderr
    proc = run_mde("import", "seed", shared_data / FCN05_CKPT, "--name", "my-fcn05", cwd=tmp_path, home=home)
    assert proc.returncode == 0
    assert proc.stderr.strip() == "my-fcn05 is already in the store (same source); nothing to do"
    proc = run_mde("tag", shared_data / MTAT_CLIP, "-m", "my-fcn05", "--json", cwd=tmp_path, home=home)
    assert proc.returncode == 0, proc.stderr
    import json

    [doc] = json.loads(proc.stdout)
    ref = np.load(shared_data / "reference" / "joram_fcn05.npz")
    mean = ref["tags"].mean(axis=0)
    expected = [str(ref["tag_names"][i]) for i in np.argsort(-mean)[:5]]
    assert [t["tag"] for t in doc["tags"]] == expected
