"""Dataset-format readers on small trees of real video files written by the tests."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import zsar.resources
from zsar.data.formats import (
    AVCA_STAGES,
    AnnotationError,
    match_class_names,
    normalize_class_name,
    read_activitynet,
    read_avca_classes,
    read_avca_split,
    read_avca_word_names,
    read_class_list,
    read_hmdb51,
    read_kinetics,
    read_ucf101,
    read_vggsound,
    read_video_list,
    write_class_list,
)
from zsar.data.records import VideoList, VideoRecord
from zsar.data.video import probe_video, write_video

# The public class lists and AVCA splits, as packaged with zsar (same layout as ../shared/data).
SHARED_DATA = Path(os.environ.get("ZSAR_SHARED_DATA", Path(zsar.resources.__file__).parent))


@pytest.fixture(scope="session")
def video_sources(tmp_path_factory):
    """One tiny real video per container, encoded once; trees are built from copies."""
    d = tmp_path_factory.mktemp("video_sources")
    frames = (np.arange(4 * 32 * 32 * 3) % 251).astype(np.uint8).reshape(4, 32, 32, 3)
    return {ext: write_video(d / f"src{ext}", frames) for ext in (".avi", ".mp4", ".webm")}


@pytest.fixture
def place(video_sources):
    def _place(path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video_sources[path.suffix.lower()], path)
        return path
    return _place


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline=newline, encoding="utf-8") as f:
        f.write(text)
    return path


def _by_id(videos: VideoList) -> dict[str, VideoRecord]:
    ids = [r.video_id for r in videos]
    assert len(set(ids)) == len(ids), "video ids must be unique"
    return {r.video_id: r for r in videos}


def test_sources_are_real_videos(video_sources):
    for ext, path in video_sources.items():
        info = probe_video(path)
        assert (info.num_frames, info.width, info.height) == (4, 32, 32), ext


# ------------------------------------------------------------------------ class lists


def test_class_list_round_trip(tmp_path):
    names = ["air drumming", "passing American football (in game)", "Blow-dryinghair", "café"]
    path = write_class_list(tmp_path / "sub" / "classes.txt", names)
    assert read_class_list(path) == names
    _write(path, "a\n\n  b  \nc\n")  # blank lines and surrounding spaces are not names
    assert read_class_list(path) == ["a", "b", "c"]
    _write(path, "a\nb\na\n")
    with pytest.raises(AnnotationError, match=r"classes.txt:3: class 'a' repeats line 1"):
        read_class_list(path)
    for bad in (["a", "a"], ["a", " b"], ["x\ny"], [""]):
        with pytest.raises(ValueError, match="write_class_list"):
            write_class_list(tmp_path / "bad.txt", bad)
    with pytest.raises(FileNotFoundError, match="class list not found"):
        read_class_list(tmp_path / "nope.txt")
    assert normalize_class_name("Apply Eye-Makeup_2") == "applyeyemakeup2"


# ---------------------------------------------------------------------- generic lists


def test_video_list_names_and_inferred_classes(tmp_path, place):
    root = tmp_path / "videos"
    place(root / "jump" / "clip 1.mp4")  # a path with a space
    place(root / "run" / "b.avi")
    place(root / "jump" / "c.webm")
    lst = _write(tmp_path / "list.txt",
                 "# a comment\n\njump/clip 1.mp4 jump\nrun/b.avi   run\n  jump/c.webm jump  \n")
    videos = read_video_list(lst, root)
    assert videos.classes == ["jump", "run"]
    assert [(r.video_id, r.label) for r in videos] == [
        ("jump/clip 1.mp4", 0), ("run/b.avi", 1), ("jump/c.webm", 0)]
    assert all(os.path.isabs(r.path) and os.path.isfile(r.path) for r in videos)
    assert videos[0].path == str(root / "jump" / "clip 1.mp4")


def test_video_list_int_labels_class_file_and_tabs(tmp_path, place):
    place(tmp_path / "a.mp4")
    place(tmp_path / "b c.mp4")
    classes = write_class_list(tmp_path / "classes.txt", ["air drumming", "abseiling"])
    # 1-based indices, list next to the videos (root defaults to the list's folder)
    lst = _write(tmp_path / "l1.txt", "a.mp4 2\nb c.mp4 1\n")
    videos = read_video_list(lst, classes=classes, index_base=1)
    assert videos.classes == ["air drumming", "abseiling"]
    assert [r.label for r in videos] == [1, 0]
    # tab-separated class names containing spaces
    lst = _write(tmp_path / "l2.txt", "a.mp4\tabseiling\nb c.mp4\tair drumming\n")
    assert [r.label for r in read_video_list(lst, classes=classes)] == [1, 0]
    # integers without a class list: the numbers are the classes
    lst = _write(tmp_path / "l3.txt", "a.mp4 2\nb c.mp4 0\n")
    videos = read_video_list(lst)
    assert videos.classes == ["0", "1", "2"] and [r.label for r in videos] == [2, 0]
    # unlabelled lists (files to predict on)
    lst = _write(tmp_path / "l4.txt", "a.mp4\nb c.mp4\n")
    videos = read_video_list(lst, labelled=False)
    assert [r.label for r in videos] == [-1, -1] and videos.classes == []
    assert videos[1].path == str(tmp_path / "b c.mp4")


def test_video_list_bad_input(tmp_path):
    classes = ["jump", "run"]
    cases = {
        "a.mp4 jump\nb.mp4 swim\n": r"bad.txt:2: unknown class 'swim'",
        "a.mp4 jump\nb.mp4 2\n": r"bad.txt:2: label 2 out of range: expected 0..1",
        "a.mp4 jump\nb.mp4\n": r"bad.txt:2: expected '<path> <label>'",
        "a.mp4 jump\n\na.mp4 run\n": r"'a.mp4' is listed twice \(line 1 and line 3\)",
    }
    for text, pattern in cases.items():
        lst = _write(tmp_path / "bad.txt", text)
        with pytest.raises(AnnotationError, match=pattern):
            read_video_list(lst, classes=classes, check_files=False)
    lst = _write(tmp_path / "bad.txt", "a.mp4 jump\nb.mp4 3\n")
    with pytest.raises(AnnotationError, match=r"bad.txt:2: labels mix integer"):
        read_video_list(lst, check_files=False)
    with pytest.raises(FileNotFoundError, match=r"video list not found: .*nope.txt"):
        read_video_list(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="on_missing"):
        read_video_list(lst, classes=["jump", "a", "b", "c"], on_missing="ignore")


def test_missing_files_error_skip_and_no_check(tmp_path, place, caplog):
    place(tmp_path / "v" / "b.mp4")
    lst = _write(tmp_path / "list.txt", "a.mp4 x\nb.mp4 x\nc.mp4 y\n")
    with pytest.raises(FileNotFoundError) as e:
        read_video_list(lst, tmp_path / "v")
    msg = str(e.value)
    assert "2 of 3 videos listed in" in msg and str(lst) in msg
    assert f"{tmp_path / 'v' / 'a.mp4'} ({lst}:1)" in msg and f"({lst}:3)" in msg
    with caplog.at_level(logging.WARNING, logger="zsar.data.formats"):
        videos = read_video_list(lst, tmp_path / "v", on_missing="skip")
    assert [r.video_id for r in videos] == ["b.mp4"] and videos.classes == ["x", "y"]
    assert "2 of 3 videos" in caplog.text and "skipped" in caplog.text
    videos = read_video_list(lst, tmp_path / "nowhere", check_files=False)
    assert [r.path for r in videos] == [str(tmp_path / "nowhere" / n)
                                        for n in ("a.mp4", "b.mp4", "c.mp4")]
    with pytest.raises(FileNotFoundError, match="video root .* is not a directory"):
        read_video_list(lst, tmp_path / "nowhere")


def test_reencoded_extension_is_found(tmp_path, place):
    # the list names .avi files; the tree holds what `zsar prepare` wrote (.webm), or both
    place(tmp_path / "v" / "k" / "a.webm")
    place(tmp_path / "v" / "k" / "b.avi")
    place(tmp_path / "v" / "k" / "b.webm")
    lst = _write(tmp_path / "list.txt", "k/a.avi 0\nk/b.avi 0\n")
    videos = read_video_list(lst, tmp_path / "v")
    assert [Path(r.path).name for r in videos] == ["a.webm", "b.avi"]
    videos = read_video_list(lst, tmp_path / "v", extensions=["webm"])
    assert [Path(r.path).name for r in videos] == ["a.webm", "b.webm"]


# ----------------------------------------------------------------------------- UCF101

UCF_CLASSES = ["PlayingFlute", "ApplyEyeMakeup", "HandstandPushups"]  # classInd order, unsorted


def _ucf_file(cls: str, g: int) -> str:
    # the official lists name HandstandPushups' files v_HandStandPushups_...
    stem = "HandStandPushups" if cls == "HandstandPushups" else cls
    return f"{cls}/v_{stem}_g{g:02d}_c01.avi"


@pytest.fixture
def ucf_tree(tmp_path, place):
    root, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    for cls in UCF_CLASSES:
        for g in (1, 2, 3):
            place(root / _ucf_file(cls, g))
    crlf = "\r\n"  # the official files have Windows line endings
    _write(splits / "classInd.txt", "".join(f"{i} {c}\n" for i, c in enumerate(UCF_CLASSES, 1)),
           crlf)
    for split, test_g in ((1, 1), (2, 2), (3, 3)):
        train = [(c, g) for c in UCF_CLASSES for g in (1, 2, 3) if g != test_g]
        _write(splits / f"trainlist0{split}.txt",
               "".join(f"{_ucf_file(c, g)} {UCF_CLASSES.index(c) + 1}\n" for c, g in train), crlf)
        _write(splits / f"testlist0{split}.txt",
               "".join(f"{_ucf_file(c, test_g)}\n" for c in UCF_CLASSES), crlf)
    return root, splits


def test_ucf101(ucf_tree):
    root, splits = ucf_tree
    train = read_ucf101(splits, root, split=1, subset="train")
    test = read_ucf101(splits, root, split=1, subset="test")
    assert train.classes == UCF_CLASSES == test.classes
    assert (len(train), len(test)) == (6, 3)
    ids = _by_id(train)
    assert ids["v_HandStandPushups_g02_c01"].label == 2
    assert ids["v_PlayingFlute_g03_c01"].path == str(root / "PlayingFlute/v_PlayingFlute_g03_c01.avi")
    assert {r.video_id: r.label for r in test} == {
        "v_PlayingFlute_g01_c01": 0, "v_ApplyEyeMakeup_g01_c01": 1, "v_HandStandPushups_g01_c01": 2}
    test2 = read_ucf101(splits, root, split=2, subset="test")
    assert sorted(r.video_id for r in test2) == sorted(
        f"v_{s}_g02_c01" for s in ("PlayingFlute", "ApplyEyeMakeup", "HandStandPushups"))
    assert not set(_by_id(test2)) & set(_by_id(read_ucf101(splits, root, 2, "train")))


def test_ucf101_bad_input(ucf_tree):
    root, splits = ucf_tree
    with pytest.raises(ValueError, match="split must be 1, 2 or 3"):
        read_ucf101(splits, root, split=4)
    with pytest.raises(ValueError, match="subset must be 'train' or 'test'"):
        read_ucf101(splits, root, subset="val")
    (splits / "trainlist03.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"UCF101 train list not found: .*trainlist03.txt"):
        read_ucf101(splits, root, split=3)
    lst = splits / "trainlist01.txt"
    good = lst.read_text()
    cases = {
        "PlayingFlute/v_PlayingFlute_g02_c01.avi 2\n": r"trainlist01.txt:1: label 2 \(ApplyEyeMakeup\)"
                                                      r" disagrees with the folder 'PlayingFlute'",
        "PlayingFlute/v_PlayingFlute_g02_c01.avi 4\n": r"trainlist01.txt:1: label 4 out of range 1..3",
        "Swimming/v_Swimming_g02_c01.avi 1\n": r"trainlist01.txt:1: class folder 'Swimming' is not",
        "PlayingFlute/v_PlayingFlute_g02_c01.avi one\n": r"trainlist01.txt:1: expected",
    }
    for first, pattern in cases.items():
        lst.write_text(first + good)
        with pytest.raises(AnnotationError, match=pattern):
            read_ucf101(splits, root)
    lst.write_text(good)
    _write(splits / "classInd.txt", "1 PlayingFlute\n3 ApplyEyeMakeup\n")
    with pytest.raises(AnnotationError, match=r"classInd.txt: indices must be 1..2 without gaps"):
        read_ucf101(splits, root)
    _write(splits / "classInd.txt", "1 PlayingFlute\nApplyEyeMakeup\n")
    with pytest.raises(AnnotationError, match=r"classInd.txt:2: expected '<index> <ClassName>'"):
        read_ucf101(splits, root)


def test_ucf101_missing_video(ucf_tree):
    root, splits = ucf_tree
    (root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 videos .*v_ApplyEyeMakeup_g01_c01.avi "
                                                r"\(.*testlist01.txt:2\)"):
        read_ucf101(splits, root, subset="test")
    assert len(read_ucf101(splits, root, subset="test", on_missing="skip")) == 2


# ----------------------------------------------------------------------------- HMDB51

HMDB = {  # class → [(file, flag)]: names with '#', '(', '&' occur in the real dataset
    "sword_exercise": [("#20_Sword_exercise_u_nm_np1_fr_goo_0.avi", 1),
                       ("Blade_Of_Fury_-_Scene_1_sword_exercise_f_cm_np1_ri_med_3.avi", 2),
                       ("sword_(&)_x_sword_exercise_f_nm_np1_le_bad_0.avi", 0)],
    "brush_hair": [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 1),
                   ("April_09_brush_hair_u_nm_np1_ba_goo_1.avi", 1),
                   ("Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi", 2)],
    "cartwheel": [("Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi", 2),
                  ("Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.avi", 1)],
}


@pytest.fixture
def hmdb_tree(tmp_path, place):
    root, splits = tmp_path / "hmdb51", tmp_path / "testTrainMulti_7030_splits"
    for cls, items in HMDB.items():
        for name, _ in items:
            place(root / cls / name)
        _write(splits / f"{cls}_test_split1.txt", "".join(f"{n} {f} \n" for n, f in items))
        # split 2 swaps train and test
        _write(splits / f"{cls}_test_split2.txt",
               "".join(f"{n} {({1: 2, 2: 1}).get(f, f)} \n" for n, f in items))
    return root, splits


def test_hmdb51(hmdb_tree):
    root, splits = hmdb_tree
    train = read_hmdb51(splits, root, split=1, subset="train")
    test = read_hmdb51(splits, root, split=1, subset="test")
    assert train.classes == ["brush_hair", "cartwheel", "sword_exercise"] == test.classes
    assert (len(train), len(test)) == (4, 3)
    assert len(read_hmdb51(splits, root, split=1, subset="unused")) == 1
    ids = _by_id(train)
    rec = ids["#20_Sword_exercise_u_nm_np1_fr_goo_0"]
    assert rec.label == 2 and rec.path == str(root / "sword_exercise" / "#20_Sword_exercise_u_nm_np1_fr_goo_0.avi")
    assert sorted(r.label for r in train) == [0, 0, 1, 2]
    assert {r.video_id for r in read_hmdb51(splits, root, split=2, subset="train")} == {
        r.video_id for r in test}
    given = read_hmdb51(splits, root, classes=["sword exercise", "cartwheel", "brush_hair"])
    assert given.classes[0] == "sword exercise" and _by_id(given)[rec.video_id].label == 0


def test_hmdb51_bad_input(hmdb_tree):
    root, splits = hmdb_tree
    with pytest.raises(FileNotFoundError, match=r"no HMDB51 split files '<class>_test_split3.txt'"):
        read_hmdb51(splits, root, split=3)
    with pytest.raises(ValueError, match="subset must be one of"):
        read_hmdb51(splits, root, subset="val")
    with pytest.raises(AnnotationError, match=r"cartwheel_test_split1.txt: class 'cartwheel'"):
        read_hmdb51(splits, root, classes=["brush_hair", "sword_exercise"])
    bad = splits / "cartwheel_test_split1.txt"
    bad.write_text(bad.read_text() + "extra_video.avi 3\n")
    with pytest.raises(AnnotationError, match=r"cartwheel_test_split1.txt:3: expected '<video.avi> 0\|1\|2'"):
        read_hmdb51(splits, root)


# --------------------------------------------------------------------------- Kinetics

K_ROWS = [  # label, youtube_id, start, end, split, where the file lives (relative to root)
    ("air drumming", "-abc_123XYZ", 10, 20, "train", "train/air_drumming/{id}.mp4"),
    ("air drumming", "def456ghi78", 0, 10, "train", "train/{id}.webm"),
    ("passing American football (in game)", "ghi789jkl01", 5, 15, "train",
     "passing American football (in game)/{id}.avi"),
    ("abseiling", "jkl012mno34", 30, 40, "train", "{ytid}.mp4"),  # bare youtube id naming
    ("abseiling", "mno345pqr67", 1, 11, "val", "val/abseiling/{id}.mp4"),
]


@pytest.fixture
def kinetics_tree(tmp_path, place):
    root = tmp_path / "kinetics"
    lines = ["label,youtube_id,time_start,time_end,split,is_cc"]
    for label, ytid, s, e, split, where in K_ROWS:
        vid = f"{ytid}_{s:06d}_{e:06d}"
        place(root / where.format(id=vid, ytid=ytid))
        lines.append(f'"{label}",{ytid},{s},{e},{split},0')
    lines.append(lines[1])  # a repeated row, as some released CSVs have
    csv_path = _write(tmp_path / "kinetics.csv", "\n".join(lines) + "\n")
    return root, csv_path


def test_kinetics(kinetics_tree, caplog):
    root, csv_path = kinetics_tree
    with caplog.at_level(logging.INFO, logger="zsar.data.formats"):
        train = read_kinetics(csv_path, root, split="train")
    assert "dropped 1 rows repeating" in caplog.text
    assert train.classes == ["abseiling", "air drumming", "passing American football (in game)"]
    assert len(train) == 4
    ids = _by_id(train)
    assert ids["-abc_123XYZ_000010_000020"].path == str(
        root / "train/air_drumming/-abc_123XYZ_000010_000020.mp4")
    assert ids["def456ghi78_000000_000010"].path.endswith(".webm")
    assert ids["ghi789jkl01_000005_000015"].label == 2
    assert ids["jkl012mno34_000030_000040"].path == str(root / "jkl012mno34.mp4")
    val = read_kinetics(csv_path, root, split="validate")  # alias of the CSV's "val"
    assert [(r.video_id, r.label) for r in val] == [("mno345pqr67_000001_000011", 0)]
    assert val.classes == train.classes
    assert len(read_kinetics(csv_path, root)) == 5
    # a given class list in another spelling (folder-style underscores)
    given = ["passing_American_football_(in_game)", "air_drumming", "abseiling", "zumba"]
    videos = read_kinetics(csv_path, root, split="train", classes=given)
    assert videos.classes == given and _by_id(videos)["ghi789jkl01_000005_000015"].label == 0
    # check_files=False names the flat default without touching the disk
    videos = read_kinetics(csv_path, tmp := root / "elsewhere", check_files=False)
    assert videos[0].path == str(tmp / "-abc_123XYZ_000010_000020.mp4")


def test_kinetics_test_csv_and_bad_input(kinetics_tree, tmp_path):
    root, _ = kinetics_tree
    test_csv = _write(tmp_path / "test.csv", "youtube_id,time_start,time_end,split\n"
                                             "mno345pqr67,1,11,test\n")
    videos = read_kinetics(test_csv, root, classes=["abseiling", "air drumming"])
    assert [r.label for r in videos] == [-1] and videos.classes == ["abseiling", "air drumming"]
    bad = tmp_path / "bad.csv"
    cases = {
        "label,youtube_id,time_start,time_end,split\nzumba,mno345pqr67,1,11,test\n":
            r"bad.csv:2: unknown class 'zumba'",
        "label,youtube_id,time_start,time_end,split\nabseiling,mno345pqr67,1.5,11,test\n":
            r"bad.csv:2: time_start must be a non-negative whole number",
        "label,youtube_id,time_start,time_end,split\nabseiling,mno345pqr67,1\n":
            r"bad.csv:2: expected 5 fields",
        "label,ytid,start,end\n": r"bad.csv:1: expected a header with columns",
        "label,youtube_id,time_start,time_end,split\nabseiling,x,1,11,val\nzumba,x,1,11,val\n":
            r"clip 'x_000001_000011' has label 'abseiling' at .*:2 and 'zumba' at .*:3",
    }
    for text, pattern in cases.items():
        _write(bad, text)
        with pytest.raises(AnnotationError, match=pattern):
            read_kinetics(bad, root, classes=["abseiling", "air drumming", "zumba"]
                          if "clip" in pattern else ["abseiling"])
    _write(bad, "label,youtube_id,time_start,time_end\nabseiling,x,1,11\n")
    with pytest.raises(AnnotationError, match="has no 'split' column"):
        read_kinetics(bad, root, split="train")
    _write(bad, "label,youtube_id,time_start,time_end,split\nabseiling,nothere0000,1,11,val\n")
    with pytest.raises(FileNotFoundError, match=r"1 of 1 videos .*nothere0000_000001_000011\.\* "
                                                r"\(.*bad.csv:2\)"):
        read_kinetics(bad, root)
    with pytest.raises(FileNotFoundError, match="Kinetics CSV not found"):
        read_kinetics(tmp_path / "missing.csv", root)


# ------------------------------------------------------------------------ ActivityNet


@pytest.fixture
def anet_tree(tmp_path, place):
    root = tmp_path / "anet"
    ann = lambda *labels: [{"label": lb, "segment": [float(i), float(i) + 2.5]}
                           for i, lb in enumerate(labels)]
    database = {
        "vidAAAAAAA1": {"subset": "training", "duration": 30.0, "annotations": ann("Archery")},
        "vidBBBBBBB2": {"subset": "training", "annotations": ann("Archery", "Applying sunscreen",
                                                                 "Applying sunscreen")},
        "vidCCCCCCC3": {"subset": "validation", "annotations": ann("Mooping floor", "Archery")},
        "vidDDDDDDD4": {"subset": "testing", "annotations": []},
    }
    data = {"version": "VERSION 1.3", "taxonomy": [], "database": database}
    path = _write(tmp_path / "activity_net.v1-3.min.json", json.dumps(data))
    place(root / "v_vidAAAAAAA1.mp4")
    place(root / "train" / "vidBBBBBBB2.webm")  # without the v_ prefix, in a subfolder
    place(root / "v_vidCCCCCCC3.mkv".replace(".mkv", ".mp4"))
    place(root / "test" / "v_vidDDDDDDD4.avi")
    return root, path, data


def test_activitynet(anet_tree):
    root, path, _ = anet_tree
    train = read_activitynet(path, root, "training")
    assert train.classes == ["Applying sunscreen", "Archery", "Mooping floor"]
    # most frequent label; the tie in vidCCCCCCC3 goes to the first annotated
    assert {r.video_id: r.label for r in train} == {"vidAAAAAAA1": 1, "vidBBBBBBB2": 0}
    assert _by_id(train)["vidBBBBBBB2"].path == str(root / "train" / "vidBBBBBBB2.webm")
    val = read_activitynet(path, root, "val")
    assert [(r.video_id, r.label) for r in val] == [("vidCCCCCCC3", 2)]
    test = read_activitynet(path, root, "testing")
    assert [(r.video_id, r.label) for r in test] == [("vidDDDDDDD4", -1)]
    assert test[0].path == str(root / "test" / "v_vidDDDDDDD4.avi")
    assert len(read_activitynet(path, root, None)) == 4
    given = read_activitynet(path, root, "training",
                             classes=["Archery", "Applying sunscreen", "Mooping floor"])
    assert {r.video_id: r.label for r in given} == {"vidAAAAAAA1": 0, "vidBBBBBBB2": 1}


def test_activitynet_bad_input(anet_tree, tmp_path):
    root, path, data = anet_tree
    with pytest.raises(ValueError, match="subset must be one of"):
        read_activitynet(path, root, "trainval")
    bad = tmp_path / "bad.json"
    _write(bad, '{"database": {\n  "x": {"subset": "training",\n}')
    with pytest.raises(AnnotationError, match=r"bad.json:3: invalid JSON"):
        read_activitynet(bad, root)
    _write(bad, json.dumps({"taxonomy": []}))
    with pytest.raises(AnnotationError, match="expected an object with a 'database'"):
        read_activitynet(bad, root)
    data["database"]["vidAAAAAAA1"]["annotations"] = []
    _write(bad, json.dumps(data))
    with pytest.raises(AnnotationError, match=r"database\['vidAAAAAAA1'\]: a training video "
                                              r"without annotations"):
        read_activitynet(bad, root)
    data["database"]["vidAAAAAAA1"]["annotations"] = [{"segment": [0, 1]}]
    _write(bad, json.dumps(data))
    with pytest.raises(AnnotationError, match=r"vidAAAAAAA1'\]\.annotations\[0\]: expected"):
        read_activitynet(bad, root)
    with pytest.raises(AnnotationError, match=r"database\['vidBBBBBBB2'\]: unknown class"):
        read_activitynet(path, root, classes=["Archery"])
    os.unlink(root / "v_vidAAAAAAA1.mp4")
    with pytest.raises(FileNotFoundError, match=r"1 of 2 videos .*v_vidAAAAAAA1\.\*"):
        read_activitynet(path, root)


# --------------------------------------------------------------------------- VGGSound


def test_vggsound(tmp_path, place, caplog):
    root = tmp_path / "vggsound"
    rows = [("---g-f_I2yQ", 1, "people marching", "test"),
            ("--0PQM4-hqg", 30, "waterfall burbling", "train"),
            ("--56QUhyDQM", 185, "bird chirping, tweeting", "train"),
            ("--5OkAjCI7g", 40, "bird chirping, tweeting", "test")]
    place(root / "test" / "---g-f_I2yQ_000001.mp4")
    place(root / "train" / "--0PQM4-hqg_000030.webm")
    place(root / "train" / "--56QUhyDQM_000185_000195.mp4")  # the with-end naming
    place(root / "--5OkAjCI7g_000040.avi")
    text = "".join(f'{y},{s},"{lb}",{sp}\n' for y, s, lb, sp in rows)
    csv_path = _write(tmp_path / "vggsound.csv", text + text.splitlines(True)[1])  # a repeat
    videos = read_vggsound(csv_path, root)
    assert videos.classes == ["bird chirping, tweeting", "people marching", "waterfall burbling"]
    assert [(r.video_id, r.label) for r in videos] == [
        ("---g-f_I2yQ_000001", 1), ("--0PQM4-hqg_000030", 2), ("--56QUhyDQM_000185", 0),
        ("--5OkAjCI7g_000040", 0)]
    assert videos[2].path == str(root / "train" / "--56QUhyDQM_000185_000195.mp4")
    train = read_vggsound(csv_path, root, "train")
    assert [r.video_id for r in train] == ["--0PQM4-hqg_000030", "--56QUhyDQM_000185"]
    assert train.classes == videos.classes and len(read_vggsound(csv_path, root, "test")) == 2
    # the AVCA per-stage CSVs: a header and extra columns
    avca = _write(tmp_path / "stage.csv",
                  "youtube_id,start_seconds,label,split,filename,label_code,category\n"
                  '--56QUhyDQM,185,"bird chirping, tweeting",train,--56QUhyDQM_000185,17,animals\n')
    assert [r.video_id for r in read_vggsound(avca, root)] == ["--56QUhyDQM_000185"]
    bad = tmp_path / "bad.csv"
    for text, pattern in {"a,1,x,train\nb,x,y,test\n": r"bad.csv:2: start_seconds must be",
                          "a,1,x,train\nb,2\n": r"bad.csv:2: expected youtube_id,start_seconds"}.items():
        _write(bad, text)
        with pytest.raises(AnnotationError, match=pattern):
            read_vggsound(bad, root, check_files=False)
    _write(bad, "zzz,1,x,train\n")
    with caplog.at_level(logging.WARNING, logger="zsar.data.formats"):
        assert len(read_vggsound(bad, root, on_missing="skip")) == 0
    assert "1 of 1 videos" in caplog.text


# ------------------------------------------------------------------------------- AVCA


def _anet_like_list() -> VideoList:
    classes = ["Applying sunscreen", "Archery", "Blow-drying hair", "Ping-pong", "Zumba"]
    recs = [VideoRecord(f"/d/v_{c[:3]}{i}.mp4", k, f"{c[:3]}{i}")
            for k, c in enumerate(classes) for i in range(2)]
    return VideoList(recs, classes)


def test_avca_split_class_matching(tmp_path):
    split = tmp_path / "ActivityNet" / "main_split"
    stages = {"stage_1_train": ["Archery", "Blow-dryinghair"],
              "stage_1_val_seen": ["Archery", "Blow-dryinghair"],
              "stage_1_val_unseen": ["Ping-pong"],
              "stage_2_train": ["Archery", "Blow-dryinghair", "Ping-pong"],
              "stage_2_test_seen": ["Archery", "Blow-dryinghair", "Ping-pong"],
              "stage_2_test_unseen": ["Applyingsunscreen"]}
    for s, names in stages.items():
        write_class_list(split / f"{s}.txt", names)
    assert set(stages) == set(AVCA_STAGES)
    videos = _anet_like_list()
    assert read_avca_classes(split, "stage_1_train") == ["Archery", "Blow-dryinghair"]
    sub = read_avca_split(videos, split, "stage_1_train")
    assert sub.classes == ["Archery", "Blow-drying hair"]
    assert sorted((r.video_id, r.label) for r in sub) == [("Arc0", 0), ("Arc1", 0),
                                                          ("Blo0", 1), ("Blo1", 1)]
    gzsl = read_avca_split(videos, split, ["stage_2_test_seen", "stage_2_test_unseen"])
    assert gzsl.classes == ["Archery", "Blow-drying hair", "Ping-pong", "Applying sunscreen"]
    assert len(gzsl) == 8 and {r.label for r in gzsl} == {0, 1, 2, 3}
    # unmatched names: one error listing them with the closest dataset class
    write_class_list(split / "stage_1_val_unseen.txt", ["Pingpong", "Mopingfloor", "Arhcery"])
    with pytest.raises(ValueError, match=r"stage_1_val_unseen.txt: 2 of 3 names have no match.*"
                                         r"'Mopingfloor'.*'Arhcery' \(closest: 'Archery'\)"):
        read_avca_split(videos, split, "stage_1_val_unseen")
    with pytest.raises(ValueError, match="stage must be one of"):
        read_avca_split(videos, split, "stage_3")
    with pytest.raises(FileNotFoundError, match=r"did you mean .*main_split"):
        read_avca_split(videos, split.parent, "stage_1_train")
    with pytest.raises(ValueError, match="match several dataset classes"):
        match_class_names(["pingpong"], ["Ping-pong", "Ping pong"])


def test_avca_split_per_video_csvs(tmp_path, ucf_tree):
    root, splits = ucf_tree
    ucf = read_ucf101(splits, root, 1, "train")  # g02, g03 of each class
    split = tmp_path / "UCF" / "main_split"
    # AVCA spells UCF's HandstandPushups "HandStandPushups" in its CSVs
    write_class_list(split / "stage_1_train.txt", ["HandStandPushups", "PlayingFlute"])
    write_class_list(split / "stage_1_val_seen.txt", ["HandStandPushups", "PlayingFlute"])
    _write(split / "stage_1_train.csv", "filename,label,label_code\n"
           "v_HandStandPushups_g02_c01,HandStandPushups,36\nv_PlayingFlute_g02_c01,PlayingFlute,60\n"
           "v_PlayingFlute_g09_c09,PlayingFlute,60\n")  # not downloaded
    _write(split / "stage_1_val_seen.csv", "filename,label,label_code\n"
           "v_HandStandPushups_g03_c01,HandStandPushups,36\nv_PlayingFlute_g03_c01,PlayingFlute,60\n")
    tr = read_avca_split(ucf, split, "stage_1_train")
    va = read_avca_split(ucf, split, "stage_1_val_seen")
    assert tr.classes == va.classes == ["HandstandPushups", "PlayingFlute"]
    assert sorted((r.video_id, r.label) for r in tr) == [("v_HandStandPushups_g02_c01", 0),
                                                         ("v_PlayingFlute_g02_c01", 1)]
    assert sorted(r.video_id for r in va) == ["v_HandStandPushups_g03_c01", "v_PlayingFlute_g03_c01"]
    assert len(read_avca_split(ucf, split, "stage_1_train", video_lists=False)) == 4
    write_class_list(split / "stage_2_train.txt", ["PlayingFlute"])
    with pytest.raises(FileNotFoundError, match="per-video stage lists not found"):
        read_avca_split(ucf, split, "stage_2_train", video_lists=True)
    # ActivityNet lists segments "<id>_<k>" of one video record "<id>"
    videos = _anet_like_list()
    write_class_list(split / "stage_2_test_unseen.txt", ["Applyingsunscreen"])
    _write(split / "stage_2_test_unseen.csv", "filename,label_code,label\n"
           "App1_0,0,Applyingsunscreen\nApp1_3,0,Applyingsunscreen\n")
    assert [r.video_id for r in read_avca_split(videos, split, "stage_2_test_unseen")] == ["App1"]
    words = _write(tmp_path / "w2v.csv", 'original,manual,category\n'
                   '"bird chirping, tweeting",bird chirping,animals\nArchery,Archery,sports\n')
    assert read_avca_word_names(words) == {"bird chirping, tweeting": "bird chirping",
                                           "Archery": "Archery"}


@pytest.mark.skipif(not (SHARED_DATA / "avgzsl_splits").is_dir(),
                    reason="shared AVCA split files not available")
@pytest.mark.parametrize("dataset,class_file,counts", [
    ("UCF", "ucf101.txt", (30, 12, 9)), ("ActivityNet", "activitynet200.txt", (99, 51, 50))])
def test_avca_real_splits_match_dataset_spelling(dataset, class_file, counts):
    classes = read_class_list(SHARED_DATA / "classes" / class_file)
    videos = VideoList([VideoRecord(f"/x/{i}.mp4", i, str(i)) for i in range(len(classes))],
                       classes)
    for kind in ("main_split", "cls_split"):
        split = SHARED_DATA / "avgzsl_splits" / dataset / kind
        subs = {s: read_avca_split(videos, split, s) for s in AVCA_STAGES}
        for s, sub in subs.items():
            assert len(sub.classes) == len(read_avca_classes(split, s)) == len(sub)
            assert set(sub.classes) <= set(classes)
        if kind == "main_split":
            assert tuple(len(subs[s]) for s in ("stage_1_train", "stage_1_val_unseen",
                                                "stage_2_test_unseen")) == counts
        assert not set(subs["stage_2_test_unseen"].classes) & set(subs["stage_2_train"].classes)
    names = read_avca_word_names(
        next((SHARED_DATA / "avgzsl_splits" / dataset).glob("*_w2v_class_names.csv")))
    assert len(names) == len(classes)


# ---- the format registry and DataConfig ----------------------------------------------------------


def _records(videos: VideoList):
    return [(r.path, r.label, r.video_id) for r in videos], videos.classes


def test_data_config_reads_every_builtin_format_through_the_registry(ucf_tree, hmdb_tree, kinetics_tree,
                                                                     anet_tree, tmp_path, place):
    from zsar.data import FORMATS
    from zsar.data.config import DataConfig

    assert list(FORMATS)[:6] == ["list", "ucf101", "hmdb51", "kinetics", "activitynet", "vggsound"]
    list_file = _write(tmp_path / "l" / "list.txt", "a/x.avi walk\nb/y.avi run\n")
    place(tmp_path / "l" / "a" / "x.avi")
    place(tmp_path / "l" / "b" / "y.avi")
    cases = [
        (DataConfig(format="list", annotations=str(list_file)), read_video_list(list_file)),
        (DataConfig(format="ucf101", annotations=str(ucf_tree[1]), root=str(ucf_tree[0]), split=2, subset="test"),
         read_ucf101(ucf_tree[1], ucf_tree[0], 2, "test")),
        (DataConfig(format="hmdb51", annotations=str(hmdb_tree[1]), root=str(hmdb_tree[0]), split=2),
         read_hmdb51(hmdb_tree[1], hmdb_tree[0], 2, "train")),
        (DataConfig(format="kinetics", annotations=str(kinetics_tree[1]), root=str(kinetics_tree[0]), split="val"),
         read_kinetics(kinetics_tree[1], kinetics_tree[0], split="val")),
        (DataConfig(format="activitynet", annotations=str(anet_tree[1]), root=str(anet_tree[0]), subset="validation"),
         read_activitynet(anet_tree[1], anet_tree[0], "validation")),
    ]
    for config, want in cases:
        assert _records(config.read()) == _records(want), config.format
        assert len(want) > 0
    assert _records(cases[1][0].read(subset="train")) == _records(read_ucf101(ucf_tree[1], ucf_tree[0], 2, "train"))


def test_data_config_errors_name_the_formats_and_what_is_missing(tmp_path):
    from zsar.data.config import DataConfig

    with pytest.raises(ValueError, match=r"data.format: unknown dataset format 'ucf'; expected one of list, ucf101, "):
        DataConfig(format="ucf")
    with pytest.raises(ValueError, match="data.annotations is not set .*the Kinetics CSV"):
        DataConfig(format="kinetics").read()
    with pytest.raises(ValueError, match="data.root .* is required for format 'hmdb51'"):
        DataConfig(format="hmdb51", annotations=str(tmp_path)).read()


@pytest.fixture
def own_formats():
    from zsar.data.formats import FORMATS

    before = set(FORMATS)
    yield
    for name in set(FORMATS) - before:
        FORMATS.unregister(name)


def test_a_registered_format_is_usable_from_configs(own_formats, tmp_path, place):
    """A new format registers itself with the one signature; configs and zsar eval --format see it."""
    from zsar.data import FORMATS, register_format
    from zsar.data.config import DataConfig

    @register_format("folders", annotations="unused", needs_root=True)
    def read_folders(annotations, root, *, split, subset, classes, on_missing) -> VideoList:
        """Class-per-folder layout: root/<class>/<video>."""
        names = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
        recs = [VideoRecord(str(v), k, v.stem) for k, c in enumerate(names) for v in sorted((Path(root) / c).iterdir())]
        return VideoList(recs, names)

    place(tmp_path / "v" / "jump" / "a.webm")
    place(tmp_path / "v" / "sit" / "b.webm")
    assert "folders" in FORMATS and FORMATS["folders"].annotations == "unused"
    videos = DataConfig(format="folders", annotations="-", root=str(tmp_path / "v")).read()
    assert videos.classes == ["jump", "sit"] and [r.video_id for r in videos] == ["a", "b"]


# ------------------------------------------------------- empty lists and folders given for files


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_an_empty_class_list_is_refused_naming_the_file(tmp_path, text):
    """An empty class list used to pass, and the list file was blamed ("label 0 out of range: expected
    0..-1 (0 classes")."""
    path = _write(tmp_path / "classes.txt", text)
    with pytest.raises(AnnotationError, match=r"classes.txt: holds no class names") as info:
        read_class_list(path)
    assert "\n" not in str(info.value)
    lst = _write(tmp_path / "list.txt", "a.mp4 0\n")
    with pytest.raises(AnnotationError, match=r"classes.txt: holds no class names"):
        read_video_list(lst, classes=path, check_files=False)


@pytest.mark.parametrize("text, labelled, expected", [
    ("", True, "'<path> <label>' lines"),
    ("\n  \n\n", True, "'<path> <label>' lines"),
    ("# a comment\n\n", True, "'<path> <label>' lines"),
    ("", False, "one video path per line"),
])
def test_an_empty_video_list_is_refused_naming_the_file(tmp_path, text, labelled, expected):
    lst = _write(tmp_path / "test.txt", text)
    with pytest.raises(AnnotationError, match=r"test.txt: lists no videos") as info:
        read_video_list(lst, classes=["jump", "run"], labelled=labelled, check_files=False)
    assert str(info.value).endswith(f"expected {expected}") and "\n" not in str(info.value)


def test_an_empty_ucf101_list_or_class_index_is_refused(ucf_tree):
    root, splits = ucf_tree
    _write(splits / "testlist01.txt", "\r\n")
    with pytest.raises(AnnotationError, match=r"testlist01.txt: lists no videos"):
        read_ucf101(splits, root, split=1, subset="test")
    _write(splits / "classInd.txt", "")
    with pytest.raises(AnnotationError, match=r"classInd.txt: holds no classes"):
        read_ucf101(splits, root, split=2, subset="test")


def test_a_folder_given_for_a_list_file_is_named_as_such(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    with pytest.raises(AnnotationError) as info:
        read_video_list(folder)
    assert str(info.value) == (f"{folder}: is a folder, expected a video list file (for a class-per-subfolder "
                               f"tree use the 'folder' format: --format folder)")
    with pytest.raises(AnnotationError, match=r"videos: is a folder, expected a class list file$"):
        read_class_list(folder)
    with pytest.raises(AnnotationError, match=r"videos: is a folder, expected a Kinetics CSV file$"):
        read_kinetics(folder, tmp_path, check_files=False)
    # Missing files keep their message.
    with pytest.raises(FileNotFoundError, match=r"class list not found: .*nope.txt"):
        read_class_list(tmp_path / "nope.txt")
