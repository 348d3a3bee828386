"Dataset readers on tiny fixture folders built in the official layouts (files are empty: readers only list)."
import json
from pathlib import Path

import pytest

from dfworkbench.core import DFWError
from dfworkbench.readers import (FFPP_METHODS, VideoEntry, detect_layout, parse_label, read_celebdf, read_csv,
                                 read_dataset, read_deepfakebench, read_dfdc, read_ffpp, read_folder)


def touch(root, *rels):
    for r in rels:
        p = Path(root) / r
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def ids(es): return [e.video_id for e in es]


def test_parse_label():
    assert [parse_label(x) for x in (0, 1, "REAL", "FAKE", "original", "-1")] == [0, 1, 0, 1, 0, -1]
    with pytest.raises(DFWError, match="unknown label"): parse_label("2")


def test_folder(tmp_path):
    touch(tmp_path, "real/a.mp4", "real/sub/a.mp4", "fake/a.mp4", "fake/gan/a.avi", "fake/readme.txt")
    es = read_folder(tmp_path, source="own")
    assert ids(es) == ["own/real/a", "own/real/sub/a", "own/fake/a", "own/fake/gan/a"]
    assert [e.label for e in es] == [0, 0, 1, 1]
    assert [e.family for e in es] == ["real", "real", "fake", "gan"]
    assert detect_layout(tmp_path) == "folder"


def test_csv(tmp_path):
    (tmp_path / "list.csv").write_text("path,label,split\nv/a.mp4,0,train\nv/b.mp4,fake,val\nw/a.mp4,1,test\n")
    es = read_dataset(tmp_path / "list.csv")
    assert [(e.label, e.split) for e in es] == [(0, "train"), (1, "val"), (1, "test")]
    assert es[0].path == tmp_path / "v/a.mp4"
    assert len(set(ids(es))) == 3                         # same stem 'a' in two folders: two videos
    (tmp_path / "nolabel.csv").write_text("path\nx.mp4\n")
    with pytest.raises(DFWError, match="path,label"): read_csv(tmp_path / "nolabel.csv")


def _ffpp(root):
    vids = ["000", "003", "010", "020"]
    touch(root, *[f"original_sequences/youtube/c23/videos/{v}.mp4" for v in vids],
          *[f"manipulated_sequences/{m}/c23/videos/{a}_{b}.mp4" for m in FFPP_METHODS for a, b in (("000", "003"), ("003", "000"), ("010", "020"))],
          "manipulated_sequences/Deepfakes/c40/videos/000_003.mp4")
    (root / "splits").mkdir()
    (root / "splits/train.json").write_text(json.dumps([["010", "020"]]))
    (root / "splits/test.json").write_text(json.dumps([["000", "003"]]))


def test_ffpp_same_stem_trap(tmp_path):
    _ffpp(tmp_path)
    assert detect_layout(tmp_path) == "ffpp"
    es = read_dataset(tmp_path)
    assert len(es) == 4 + 4 * 3
    same = [e for e in es if e.path.stem == "000_003"]
    assert len(same) == 4 and len({e.video_id for e in same}) == 4     # one video per method, never merged
    assert {e.video_id for e in same} == {f"FF++/{m}/000_003" for m in FFPP_METHODS}
    assert {e.family for e in same} == set(FFPP_METHODS) and all(e.label == 1 for e in same)
    split = {e.video_id: e.split for e in es}
    assert split["FF++/original/000"] == "test" and split["FF++/original/010"] == "train"
    assert split["FF++/Face2Face/003_000"] == "test" and split["FF++/NeuralTextures/010_020"] == "train"
    # grouping frame scores by parent folder name would merge these; by video id it does not
    assert len({e.path.parent.name for e in same}) == 1
    assert ids(read_ffpp(tmp_path, compression="c40")) == ["FF++/Deepfakes/000_003"]
    assert len(read_ffpp(tmp_path, methods=("Deepfakes",))) == 4 + 3


def test_celebdf_flag_is_inverted(tmp_path):
    touch(tmp_path, "Celeb-real/id0_0000.mp4", "Celeb-real/id0_0001.mp4", "YouTube-real/00001.mp4",
          "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id1_id0_0003.mp4")
    (tmp_path / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00001.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n1 Celeb-real/id0_0000.mp4\n")
    assert detect_layout(tmp_path) == "celebdf"
    es = read_dataset(tmp_path)
    assert [(e.label, e.split) for e in es] == [(0, "test"), (1, "test"), (0, "test")]   # file flag 1 = real
    assert es[1].family == "Celeb-synthesis"
    es = read_celebdf(tmp_path, include_train=True)
    assert sorted(ids(e for e in es if e.split == "train")) == ["Celeb-DF-v2/Celeb-real/id0_0001", "Celeb-DF-v2/Celeb-synthesis/id1_id0_0003"]


def test_dfdc(tmp_path):
    for part, meta in [("dfdc_train_part_0", {"a.mp4": {"label": "FAKE", "split": "train", "original": "b.mp4"},
                                              "b.mp4": {"label": "REAL", "split": "train", "original": None}}),
                       ("dfdc_train_part_1", {"c.mp4": {"label": "FAKE", "split": "train", "original": "d.mp4"}})]:
        touch(tmp_path, *[f"{part}/{k}" for k in meta])
        (tmp_path / part / "metadata.json").write_text(json.dumps(meta))
    assert detect_layout(tmp_path) == "dfdc"
    es = read_dataset(tmp_path)
    assert [(e.video_id, e.label) for e in es] == [("DFDC/a", 1), ("DFDC/b", 0), ("DFDC/c", 1)]
    assert es[2].path == tmp_path / "dfdc_train_part_1/c.mp4"
    assert [e.video_id for e in read_dfdc(tmp_path / "dfdc_train_part_1")] == ["DFDC/c"]


def test_deepfakebench_json(tmp_path):
    fr = lambda d, n: [f"{d}/{i}.png" for i in n]
    data = {"FaceForensics++": {
        "FF-real": {"train": {"c23": {"000": {"label": "FF-real", "frames": fr("ff/real/000", [10, 2, 0]), "masks": []}}}},
        "FF-DF": {"test": {"c23": {"000_003": {"label": "FF-DF", "frames": fr("ff/DF/000_003", [0]), "masks": []}}}},
        "FF-NT": {"test": {"c23": {"000_003": {"label": "FF-NT", "frames": fr("ff/NT/000_003", [0]), "masks": []}}}}},
        "DFDCP": {"DFDCP_Real": {"test": {"x": {"label": "DFDCP_Real", "frames": ["/abs/x/1.png"]}}},
                  "DFDCP_FakeA": {"test": {"y": {"label": "DFDCP_FakeA", "frames": ["/abs/y/1.png"]}}}}}
    (tmp_path / "ds.json").write_text(json.dumps(data))
    assert detect_layout(tmp_path / "ds.json") == "deepfakebench"
    es = read_dataset(tmp_path / "ds.json", root="/data")
    assert [(e.video_id, e.label, e.split) for e in es] == [
        ("FaceForensics++/FF-real/000", 0, "train"), ("FaceForensics++/FF-DF/000_003", 1, "test"),
        ("FaceForensics++/FF-NT/000_003", 1, "test"), ("DFDCP/DFDCP_Real/x", 0, "test"), ("DFDCP/DFDCP_FakeA/y", 1, "test")]
    assert [f.name for f in es[0].frames] == ["0.png", "2.png", "10.png"]
    assert es[0].path == Path("/data/ff/real/000") and es[3].path == Path("/abs/x")
    es = read_deepfakebench(tmp_path / "ds.json", label_dict={"FF-real": 0, "FF-DF": 1, "FF-NT": 1, "DFDCP_Real": 0, "DFDCP_FakeA": 1})
    assert [e.label for e in es] == [0, 1, 1, 0, 1]


def test_unlabelled_and_errors(tmp_path):
    touch(tmp_path, "x/clip.mp4", "x/deep/clip.MOV", "x/.cache/clip.mp4")
    es = read_dataset(tmp_path / "x")
    assert ids(es) == ["x/clip", "x/deep/clip"] and {e.label for e in es} == {-1}
    with pytest.raises(DFWError, match="no such file"): read_dataset(tmp_path / "missing")
    (tmp_path / "list.txt").write_text("")
    with pytest.raises(DFWError, match=".csv"): read_dataset(tmp_path / "list.txt")
    assert isinstance(es[0], VideoEntry)


# --- malformed manifests: one error naming the file, the line or key, and the fix ---------------------------------

def test_csv_encodings_and_empty_label(tmp_path):
    (tmp_path / "bom.csv").write_bytes("path,label\nx.png,real\n".encode("utf-8-sig"))
    assert [(e.video_id, e.label) for e in read_csv(tmp_path / "bom.csv")] == [("bom/x.png", 0)]
    (tmp_path / "latin.csv").write_bytes("path,label\nvid\xe9o.mp4,0\n".encode("latin-1"))
    with pytest.raises(DFWError, match=r"latin.csv: not UTF-8 text .*save the CSV as UTF-8"): read_csv(tmp_path / "latin.csv")
    (tmp_path / "empty.csv").write_text("path,label\nx.mp4,\n")
    with pytest.raises(DFWError, match=r"empty.csv, line 2: empty label"): read_csv(tmp_path / "empty.csv")
    (tmp_path / "short.csv").write_text("path,label,split\nx.mp4,0,test,extra\n")
    with pytest.raises(DFWError, match=r"short.csv, line 2: not as many cells as the header \(path,label,split\)"): read_csv(tmp_path / "short.csv")


@pytest.mark.parametrize("data, msg", [
    ("[1, 2]", "not a DeepfakeBench dataset JSON"),
    ('{"FF": {"FF-DF": {"test": {"a": {"frames": "abc"}}}}}', 'key FF/FF-DF/test/a: "frames" must be a list'),
    ('{"FF": {"FF-DF": ["x"]}}', "key FF/FF-DF must hold splits"),
    ('{"FF": {"FF-DF": {"test": {"c40": {"a": {"frames": ["0.png"]}}}}}}', "no videos at compression 'c23'; it holds c40"),
    ('{"FF": ', "not valid JSON (line 1")])
def test_deepfakebench_malformed(tmp_path, data, msg):
    (tmp_path / "ds.json").write_text(data)
    with pytest.raises(DFWError, match="ds.json") as e: read_deepfakebench(tmp_path / "ds.json")
    assert msg in str(e.value)


def test_lists_malformed(tmp_path):
    touch(tmp_path, "Celeb-real/a.mp4")
    (tmp_path / "List_of_testing_videos.txt").write_text("1 Celeb-real/a.mp4\n1\n")
    with pytest.raises(DFWError, match=r"List_of_testing_videos.txt, line 2: expected '<flag> <folder>/<file>'"): read_celebdf(tmp_path)
    d = tmp_path / "dfdc"; d.mkdir()
    (d / "metadata.json").write_text('{"a.mp4": {"label": "FAKE"}, "b.mp4": "REAL"}')
    with pytest.raises(DFWError, match=r"metadata.json: 'b.mp4' needs an object with a \"label\""): read_dfdc(d)
    (d / "metadata.json").write_text('{"a.mp4": {"label": ""}}')
    with pytest.raises(DFWError, match=r"metadata.json: 'a.mp4': empty label"): read_dfdc(d)
    _ffpp(tmp_path / "ff")
    (tmp_path / "ff/splits/val.json").write_text('[["000", "003"], ["010"]]')
    with pytest.raises(DFWError, match=r"val.json: entry 1 must be a pair"): read_ffpp(tmp_path / "ff")


def test_stills_in_folder_and_csv(tmp_path):
    touch(tmp_path, "real/a.jpg", "real/a.png", "real/a.mp4", "fake/b.webp", "fake/c.bmp", "fake/d.gif")
    es = read_folder(tmp_path, source="s")
    assert ids(es) == ["s/real/a.jpg", "s/real/a", "s/real/a.png", "s/fake/b.webp", "s/fake/c.bmp"]   # gif is not a still we read
    (tmp_path / "m.csv").write_text("path,label\nreal/a.png,0\nreal/a.mp4,0\n")
    assert ids(read_csv(tmp_path / "m.csv")) == ["m/real/a.png", "m/real/a"]
