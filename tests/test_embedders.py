"""WordVectorEmbedder over real gensim files written here (word2vec, fastText, GloVe, gensim's
pickles), and what a checkpoint's embedder spec may name: nothing it names runs code or imports."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from gensim.models import KeyedVectors

from zsar.text import WordVectorEmbedder, embedder_from_spec, load_name_map

WORDS = ["apply", "eye", "makeup", "brush", "hair", "playing", "cello", "arm", "wrestling", "pull", "ups", "the"]


@pytest.fixture
def vectors(seed):
    rng = np.random.default_rng(seed)
    kv = KeyedVectors(vector_size=20)
    kv.add_vectors(WORDS, rng.standard_normal((len(WORDS), 20)).astype(np.float32))
    return kv


def _write_vectors(kv: KeyedVectors, path, fmt: str) -> None:
    if fmt == "kv":
        kv.save(str(path))
    elif fmt == "glove":  # GloVe's own format: word and vector per line, no header line
        kv.save_word2vec_format(str(path), binary=False, write_header=False)
    else:  # word2vec binary (.bin), text (.txt) and fastText's text vectors (.vec, same format)
        kv.save_word2vec_format(str(path), binary=fmt == "bin")


@pytest.mark.parametrize("fmt, suffix", [("bin", ".bin"), ("txt", ".txt"), ("vec", ".vec"), ("glove", ".txt"),
                                         ("kv", ".kv")])
def test_loads_gensim_files_and_averages_words(tmp_path, vectors, fmt, suffix):
    path = tmp_path / f"vectors-{fmt}{suffix}"
    _write_vectors(vectors, path, fmt)
    emb = WordVectorEmbedder(path, trust_pickle=fmt == "kv")
    out = emb.embed(["ApplyEyeMakeup", "brush_hair", "playing cello"])
    assert out.shape == (3, 20) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], np.mean([vectors["apply"], vectors["eye"], vectors["makeup"]], axis=0), rtol=1e-5)
    np.testing.assert_allclose(out[1], (vectors["brush"] + vectors["hair"]) / 2, rtol=1e-5)
    rebuilt = embedder_from_spec(json.loads(json.dumps(emb.spec())), trust_pickle=fmt == "kv")
    np.testing.assert_array_equal(rebuilt.embed(["ApplyEyeMakeup"]), out[:1])


def test_loads_fasttext_binary(tmp_path):
    """Facebook's fastText .bin, written by gensim's fastText writer, read by its parser (no pickle)."""
    from gensim.models import FastText
    from gensim.models.fasttext import save_facebook_model

    model = FastText(vector_size=12, min_count=1, epochs=2, seed=1, workers=1)
    sentences = [WORDS[:6], WORDS[6:]]
    model.build_vocab(corpus_iterable=sentences)
    model.train(corpus_iterable=sentences, total_examples=len(sentences), epochs=model.epochs)
    path = tmp_path / "cc.en.12.bin"
    save_facebook_model(model, str(path))
    emb = WordVectorEmbedder(path)
    np.testing.assert_allclose(emb.embed_one("brush_hair"), (model.wv["brush"] + model.wv["hair"]) / 2, rtol=1e-5)
    rebuilt = embedder_from_spec(emb.spec())
    np.testing.assert_array_equal(rebuilt.embed_one("brush_hair"), emb.embed_one("brush_hair"))


def test_gensim_pickle_needs_trust(tmp_path, vectors):
    path = tmp_path / "vectors.kv"
    vectors.save(str(path))
    with pytest.raises(ValueError, match=r"vectors.kv is a gensim pickle \(.kv\), which can run code.*trust_pickle=True"):
        WordVectorEmbedder(path)
    spec = {"type": "word_vectors", "path": str(path)}
    with pytest.raises(ValueError, match="trust_pickle=True"):
        embedder_from_spec(spec)
    assert embedder_from_spec(spec, trust_pickle=True).dim == 20


class _MakesFile:
    """Unpickling this creates a file: what a crafted vectors file would do instead of vectors."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("name", ["vectors.kv", "vectors.model", "vectors.bin", "vectors.vec", "vectors.txt"])
def test_a_crafted_pickle_never_runs(tmp_path, name):
    marker = tmp_path / "code-ran"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_MakesFile(marker)))
    spec = {"type": "word_vectors", "path": str(path), "binary": None, "name_map": {}, "stop_words": ["the"]}
    with pytest.raises(ValueError, match=f"word-vector file {path}"):
        embedder_from_spec(spec)
    with pytest.raises(ValueError, match=f"word-vector file {path}"):
        WordVectorEmbedder(path)
    assert not marker.exists()


@pytest.mark.parametrize("spec, match", [
    ("sentence", "expected an object with a 'type', got str"),
    ([], "got list"),
    ({"type": "pickle"}, "unknown embedder type 'pickle'"),
    ({"model": "x"}, "unknown embedder type None"),
    ({"type": "sentence", "model": "x", "module": "os"}, r"unknown key\(s\) \['module'\] for type 'sentence'"),
    ({"type": "sentence", "model": 3}, "'model' must be a model folder or package name, got 3"),
    ({"type": "sentence", "model": ""}, "'model' must be"),
    ({"type": "sentence", "name_map": {"a": 1}}, "'name_map' must map label strings to strings"),
    ({"type": "word_vectors"}, "'path' must be the word-vector file, got None"),
    ({"type": "word_vectors", "path": ["a"]}, "'path' must be"),
    ({"type": "word_vectors", "path": "v.bin", "binary": "yes"}, "'binary' must be true, false or null"),
    ({"type": "word_vectors", "path": "v.bin", "stop_words": "the"}, "'stop_words' must be a list of strings"),
    ({"type": "word_vectors", "path": "v.bin", "stop_words": 5}, "'stop_words' must be a list of strings"),
])
def test_malformed_specs_are_one_line_errors(spec, match):
    with pytest.raises(ValueError, match=match) as info:
        embedder_from_spec(spec, where="ckpt/zeroshot.json embedder")
    assert str(info.value).startswith("ckpt/zeroshot.json embedder: ") and "\n" not in str(info.value)


def test_a_sentence_spec_imports_nothing_by_name(tmp_path):
    """A spec naming a module (``this``, or one that would leave a marker when imported) as the
    sentence model, or a model folder whose modules.json names one, imports nothing."""
    marker = tmp_path / "imported"
    (tmp_path / "zsar_test_marker_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Model:\n    pass\n")
    folder = tmp_path / "crafted-model"
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "zsar_test_marker_mod.Model"}]))
    script = textwrap.dedent(f"""
        import json, sys
        from zsar.text import embedder_from_spec
        errors = []
        for model in ["this", "zsar_test_marker_mod", "os", {str(folder)!r}]:
            try:
                embedder_from_spec({{"type": "sentence", "model": model}})
            except ValueError as exc:
                errors.append(str(exc))
        print(json.dumps({{"errors": errors,
                          "imported": [m for m in ("this", "zsar_test_marker_mod") if m in sys.modules]}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)  # the Zen of Python, printed when `this` is imported, would break this
    assert out["imported"] == [] and not marker.exists()
    assert len(out["errors"]) == 4
    assert "'this' is neither a model folder nor a known model package" in out["errors"][0]
    assert "names modules outside sentence-transformers ('zsar_test_marker_mod.Model')" in out["errors"][3]


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


@pytest.mark.parametrize("name, content", [
    ("huge.bin", b"4000000000 300\n"),
    ("huge.txt", b"4000000000 300\nthe 0.1 0.2\n"),
    ("junk.bin", bytes(range(256)) * 4),
])
def test_a_lying_header_is_refused_before_allocating(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"word-vector file {path} could not be read"):
        WordVectorEmbedder(path)


def test_name_map_that_is_not_utf8_or_a_folder_is_named(tmp_path):
    path = tmp_path / "names.csv"
    path.write_bytes(b"original,manual\n\xeb\x9f secret,x\n")
    with pytest.raises(ValueError) as info:
        load_name_map(path)
    assert str(info.value) == f"name map {path} is not UTF-8 text; expected an 'original,manual' CSV file"
    with pytest.raises(ValueError, match=f"name map {tmp_path} is a folder"):
        load_name_map(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_name_map(tmp_path / "none.csv")


def test_parser_reasons_keep_apostrophes_and_drop_quoted_content():
    from zsar.text.embedders import _reason_without_content

    assert _reason_without_content(UnicodeDecodeError("utf-8", b"\xeb", 0, 1, "invalid continuation byte")) == (
        "UnicodeDecodeError: <...> codec can't decode byte 0xeb in position 0: invalid continuation byte")
    for exc, want in (
            (ValueError("could not convert string to float: 'secret'"), "could not convert string to float: <...>"),
            (ValueError("invalid literal for int() with base 10: b'\\xebsecret'"),
             "invalid literal for int() with base 10: <...>"),
            (ValueError(repr("it's \"secret\"") + " can't parse"), "<...> can't parse"),
            (ValueError("unterminated 'secret"), "unterminated <...>")):
        got = _reason_without_content(exc)
        assert got == f"ValueError: {want}" and "secret" not in got


def test_binary_vectors_named_txt_say_not_utf8(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_bytes(bytes([0xEB, 0x9F, 0x00, 0xFF, 0x41]) * 50)
    with pytest.raises(ValueError) as info:
        WordVectorEmbedder(path)
    assert str(info.value) == (f"word-vector file {path} could not be read as word2vec, fastText or GloVe vectors: "
                               "not UTF-8 text (word2vec binary vectors are read from a file named *.bin)")
    spec = {"type": "word_vectors", "path": str(path), "binary": None, "name_map": {}, "stop_words": []}
    with pytest.raises(ValueError, match="not UTF-8 text"):
        embedder_from_spec(spec)
