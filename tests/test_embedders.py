"""WordVectorEmbedder over real gensim KeyedVectors files written here."""

from __future__ import annotations

import numpy as np
import pytest
from gensim.models import KeyedVectors

from zsar.text import WordVectorEmbedder, load_name_map

WORDS = ["apply", "eye", "makeup", "brush", "hair", "playing", "cello", "arm", "wrestling", "pull", "ups", "the"]


@pytest.fixture
def vectors(seed):
    rng = np.random.default_rng(seed)
    kv = KeyedVectors(vector_size=20)
    kv.add_vectors(WORDS, rng.standard_normal((len(WORDS), 20)).astype(np.float32))
    return kv


@pytest.mark.parametrize("fmt", ["bin", "txt", "kv"])
def test_loads_gensim_files_and_averages_words(tmp_path, vectors, fmt):
    path = tmp_path / f"w2v.{fmt}"
    if fmt == "kv":
        vectors.save(str(path))
    else:
        vectors.save_word2vec_format(str(path), binary=fmt == "bin")
    emb = WordVectorEmbedder(path)
    out = emb.embed(["ApplyEyeMakeup", "brush_hair", "playing cello"])
    assert out.shape == (3, 20) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], np.mean([vectors["apply"], vectors["eye"], vectors["makeup"]], axis=0), rtol=1e-5)
    np.testing.assert_allclose(out[1], (vectors["brush"] + vectors["hair"]) / 2, rtol=1e-5)


def test_stop_words_missing_words_and_errors(vectors, caplog):
    emb = WordVectorEmbedder(vectors)
    np.testing.assert_allclose(emb.embed_one("pull the ups"), (vectors["pull"] + vectors["ups"]) / 2, rtol=1e-5)
    with caplog.at_level("WARNING"):
        emb.embed_one("playing theremin")
    assert emb.missing_words["playing theremin"] == ["theremin"] and "theremin" in caplog.text
    with pytest.raises(ValueError, match="label 'Zorbing': none of its words"):
        emb.embed_one("Zorbing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WordVectorEmbedder("/nonexistent/vectors.bin")


def test_name_map_from_avca_csv(tmp_path, vectors):
    csv_path = tmp_path / "names.csv"
    csv_path.write_text("original,manual\nArmwrestling,Arm wrestling\n")
    emb = WordVectorEmbedder(vectors, name_map=load_name_map(csv_path))
    np.testing.assert_allclose(emb.embed_one("Armwrestling"), (vectors["arm"] + vectors["wrestling"]) / 2, rtol=1e-5)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="must have the columns 'original,manual'"):
        load_name_map(bad)


def test_not_a_vectors_file(tmp_path):
    path = tmp_path / "junk.txt"
    path.write_text("this is not\na word2vec file\n")
    with pytest.raises(ValueError, match="could not be read"):
        WordVectorEmbedder(path)
