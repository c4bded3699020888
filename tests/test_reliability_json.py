"""Every JSON reader: JSON nested far deeper than the parser's recursion gives a one-line error
naming the file, not a RecursionError; a word vocabulary is built in linear time."""

from __future__ import annotations

import pytest

DEEP = "[" * 200_000 + "]" * 200_000


def test_checkpoint_config_nested_deeply(tmp_path):
    from zsar.models.checkpoint import CheckpointError, read_config

    (tmp_path / "config.json").write_text(DEEP)
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON here \(nested too deeply\)"):
        read_config(tmp_path)


def test_run_config_nested_deeply(tmp_path):
    from zsar.train import TrainConfig

    path = tmp_path / "run.json"
    path.write_text(DEEP)
    with pytest.raises(ValueError, match="nested too deeply"):
        TrainConfig.load(path)


def test_activitynet_nested_deeply(tmp_path):
    from zsar.data.formats.activitynet import read_activitynet
    from zsar.data.formats.common import AnnotationError

    path = tmp_path / "anet.json"
    path.write_text('{"database": ' + DEEP + "}")
    with pytest.raises(AnnotationError, match="nested too deeply"):
        read_activitynet(path, tmp_path)


def test_prepare_record_nested_deeply_is_dropped_with_a_warning(tmp_path, caplog):
    from zsar.data.prepare import RECORD_FILE, _read_truncations

    (tmp_path / RECORD_FILE).write_text(DEEP)
    assert _read_truncations(tmp_path) == {}
    assert "nested too deeply" in caplog.text


def test_relatedness_predictions_nested_deeply(tmp_path):
    from zsar.cli import CLIError
    from zsar.cli.relatedness import _json_accuracy

    path = tmp_path / "pred.json"
    path.write_text(DEEP)
    with pytest.raises(CLIError, match="nested too deeply"):
        _json_accuracy(str(path))


def test_zeroshot_json_nested_deeply(tmp_path):
    from zsar.zeroshot.classifier import _read_settings

    (tmp_path / "zeroshot.json").write_text(DEEP)
    with pytest.raises(ValueError, match="nested too deeply"):
        _read_settings(tmp_path / "zeroshot.json")


class _CountingWord(str):
    """A word that counts the comparisons made with it (a list membership test compares with every entry)."""

    compared = 0

    def __eq__(self, other):
        _CountingWord.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_word_vocab_membership_is_constant_time():
    """A list-membership vocabulary compared each new word with every earlier one (40k words: 21 s)."""
    from zsar.text.vocab import WordVocab

    words = [_CountingWord(f"w{i}") for i in range(3000)]
    _CountingWord.compared = 0
    vocab = WordVocab(words + words[:10])
    assert len(vocab) == 3003 and vocab.stoi["w2999"] == 3002 and vocab.to_list()[3:] == words
    assert _CountingWord.compared < 10 * len(words)  # a list: ~4.5 million
