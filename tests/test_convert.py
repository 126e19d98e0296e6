"""Converters from the raw public corpora (tiny raw fixtures in tests/fixtures/convert/)."""
from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from inference_core.data.convert import SourceError, convert_cornell, convert_dmsc
from inference_core.data.convert.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
CORNELL = FIXTURES / "cornell"
DMSC = FIXTURES / "dmsc" / "DMSC.csv"
OUTPUTS = ("train.json", "test_leaderboard.json", "references.json")


def load(out: Path) -> tuple[list[Any], list[Any], dict[str, str]]:
    return tuple(orjson.loads((out / name).read_bytes()) for name in OUTPUTS)  # type: ignore[return-value]


def data_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    (collection,) = record["task"]["task_behavior_collections"]
    return collection["data"]


def turns(item: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["source"], t["content"]) for t in item["context"]]


def short_sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@pytest.fixture
def cornell_src(tmp_path: Path) -> Path:
    src = tmp_path / "cornell"
    shutil.copytree(CORNELL, src)
    return src


# --- Cornell ---------------------------------------------------------------------------------


def test_cornell_fixture_is_iso_8859_1() -> None:
    raw = (CORNELL / "movie_lines.txt").read_bytes()
    assert "Café".encode("iso-8859-1") in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")


def test_cornell_users_items_and_split(tmp_path: Path) -> None:
    summary = convert_cornell(CORNELL, tmp_path / "out")
    train, test, refs = load(tmp_path / "out")
    names = [r["user"]["profile"]["name"] for r in train]
    # First appearance in corpus order; JOEY (1 item) is dropped.
    assert names == ["CAMERON", "BIANCA", "COLUMBUS", "RENÉ"]
    assert [r["user"]["profile"]["name"] for r in test] == names
    assert [r["user_hash"] for r in train] == [r["user_hash"] for r in test]
    assert train[0]["user_hash"] == short_sha1("m0/u2")
    assert train[1]["user_hash"] == short_sha1("m0/u0")
    assert (summary.users, summary.train_items, summary.test_items) == (4, 5, 4)
    assert summary.skipped_rows == {"empty line text": 1}
    assert summary.dropped_users == {"fewer than 2 items": 1}

    bianca_train, bianca_test = data_of(train[1]), data_of(test[1])
    assert [i["continuation"] for i in bianca_train] == [
        "Not the hacking and gagging and spitting part.  Please.",
        "Café?",
    ]
    assert turns(bianca_train[0]) == [
        ("BIANCA", "Can we make this quick?"),
        ("CAMERON", "Well, I thought we'd start with pronunciation, if that's okay with you."),
    ]
    # The empty line L199 is gone from the context.
    assert turns(bianca_train[1]) == [("BIANCA", "You're asking me out.  That's so cute. What's your name again?")]
    assert all(i["continuation_prefix"] == "BIANCA: " and i["timestamp"] is None for i in bianca_train)
    assert all(t["timestamp"] is None for i in bianca_train for t in i["context"])
    (last,) = bianca_test
    assert "continuation" not in last
    assert last["continuation_prefix"] == "BIANCA: "
    assert turns(last) == [("JOEY", "Hey.")]

    cameron_test = data_of(test[0])[0]
    assert [s for s, _ in turns(cameron_test)] == ["BIANCA", "CAMERON", "BIANCA"]
    assert refs == {"0/0/0": "Forget it.", "1/0/0": "Go away.", "2/0/0": "Sail!", "3/0/0": "Enfin, la côte."}


def test_cornell_profiles_leave_unknowns_out(tmp_path: Path) -> None:
    convert_cornell(CORNELL, tmp_path)
    train, _test, _refs = load(tmp_path)
    profiles = {r["user"]["profile"]["name"]: r["user"]["profile"] for r in train}
    assert profiles["BIANCA"] == {
        "name": "BIANCA",
        "gender": "f",
        "credit_position": 4,
        "movie_title": "10 things i hate about you",
        "year": 1999,
        "genres": ["comedy", "romance"],
    }
    # Gender and position '?', year '1992/I', no genres.
    assert profiles["RENÉ"] == {"name": "RENÉ", "movie_title": "1492: conquest of paradise", "year": 1992}
    # Not in movie_characters_metadata.txt: name from movie_lines.txt, movie from the titles.
    assert profiles["COLUMBUS"] == {"name": "COLUMBUS", "movie_title": "1492: conquest of paradise", "year": 1992}
    assert all(r["user"]["personality"] == {} for r in train)
    task = train[0]["task"]
    assert task["description"] == "Continue the movie dialogue as this character."
    assert task["task_behavior_collections"][0]["type"] == "dialogue"
    assert data_of(train[3])[0]["continuation"] == "Très bien."


def test_cornell_options(tmp_path: Path) -> None:
    summary = convert_cornell(CORNELL, tmp_path, min_items=1, max_context_turns=1)
    train, test, refs = load(tmp_path)
    names = [r["user"]["profile"]["name"] for r in test]
    assert names == ["CAMERON", "BIANCA", "JOEY", "COLUMBUS", "RENÉ"]
    assert summary.dropped_users == {}
    assert data_of(train[2]) == []  # JOEY's only item is his test item
    assert turns(data_of(test[2])[0]) == [("BIANCA", "Go away.")]
    assert turns(data_of(test[0])[0]) == [("BIANCA", "Not the hacking and gagging and spitting part.  Please.")]
    assert refs["2/0/0"] == "Fine."


def test_cornell_is_deterministic(tmp_path: Path) -> None:
    convert_cornell(CORNELL, tmp_path / "a")
    convert_cornell(CORNELL, tmp_path / "b")
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_cornell_wrong_field_count_names_file_and_line(cornell_src: Path, tmp_path: Path) -> None:
    with (cornell_src / "movie_lines.txt").open("ab") as fh:
        fh.write(b"L999 +++$+++ u0 +++$+++ m0\n")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SourceError) as err:
        convert_cornell(cornell_src, out)
    assert err.value.path.endswith("movie_lines.txt")
    assert err.value.line == 17
    assert "expected 5 fields" in str(err.value)
    assert list(out.iterdir()) == []


def test_cornell_unknown_line_id(cornell_src: Path, tmp_path: Path) -> None:
    with (cornell_src / "movie_conversations.txt").open("ab") as fh:
        fh.write(b"u0 +++$+++ u2 +++$+++ m0 +++$+++ ['L194', 'L12345']\n")
    with pytest.raises(SourceError, match=r"movie_conversations.txt, line 6: .*L12345"):
        convert_cornell(cornell_src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cornell_missing_file_cli_exit_2(cornell_src: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (cornell_src / "movie_titles_metadata.txt").unlink()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("untouched")
    assert main(["cornell", str(cornell_src), str(out)]) == 2
    assert "movie_titles_metadata.txt: file not found" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_cornell_cli_replaces_previous_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.json").write_text("old")
    assert main(["cornell", str(CORNELL), str(out), "--min-items", "2"]) == 0
    printed = capsys.readouterr().out
    assert "users: 4" in printed and "train items: 5" in printed and "test items: 4" in printed
    assert "skipped rows (empty line text): 1" in printed
    assert "dropped users (fewer than 2 items): 1" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    assert len(load(out)[0]) == 4


def test_cli_rejects_bad_option(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["cornell", str(CORNELL), str(tmp_path), "--min-items", "0"])
    assert exc.value.code == 2


# --- DMSC ------------------------------------------------------------------------------------


def test_dmsc_fixture_has_the_raw_quirks() -> None:
    raw = DMSC.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf,ID,Movie_Name_EN")
    assert ',"",'.encode() in raw and "有点长\n第二行".encode() in raw


def test_dmsc_users_items_and_split(tmp_path: Path) -> None:
    summary = convert_dmsc(DMSC, tmp_path)
    train, test, refs = load(tmp_path)
    assert [r["user"]["profile"] for r in train] == [{"name": "然潘"}, {"name": "影志"}]
    assert [r["user_hash"] for r in test] == [r["user_hash"] for r in train]
    assert train[0]["user_hash"] == short_sha1("dmsc/然潘")
    assert (summary.users, summary.train_items, summary.test_items) == (2, 3, 2)
    assert summary.skipped_rows == {"empty comment": 1}
    assert summary.dropped_users == {"fewer than 2 items": 1}

    ran = data_of(train[0])
    # Date order; the two 2015-05-13 reviews keep file order, so the later-filed one is the test item.
    assert [(i["timestamp"], i["continuation"]) for i in ran] == [
        ("2015-04-01", "首映礼看的。"),
        ("2015-05-13", "连奥创都知道整容要去韩国。"),
    ]
    assert [i["rating"] for i in ran] == [5, 3]
    assert all(i["context"] == [] for i in ran)
    assert ran[0]["continuation_prefix"] == "复仇者联盟2: "
    assert data_of(test[0]) == [{"context": [], "continuation_prefix": "大鱼: ", "timestamp": "2015-05-13", "rating": 1}]

    assert [i["continuation"] for i in data_of(train[1])] == ["奇幻。"]
    assert data_of(test[1])[0]["continuation_prefix"] == "复仇者联盟2: "
    assert refs == {"0/0/0": "同一天第二条", "1/0/0": "好看，但是, 有点长\n第二行"}
    task = train[0]["task"]
    assert task["description"] == "Write this Douban user's short review of the movie."


def test_dmsc_min_items(tmp_path: Path) -> None:
    summary = convert_dmsc(DMSC, tmp_path, min_items=1)
    train, test, refs = load(tmp_path)
    assert [r["user"]["profile"]["name"] for r in test] == ["然潘", "影志", "孤独者"]
    assert data_of(train[2]) == [] and refs["2/0/0"] == "只有一条。"
    assert summary.dropped_users == {}


def test_dmsc_without_index_column_or_bom(tmp_path: Path) -> None:
    with DMSC.open(encoding="utf-8-sig", newline="") as fh:
        rows = [row[1:] for row in csv.reader(fh)]
    src = tmp_path / "plain.csv"
    with src.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    convert_dmsc(src, tmp_path / "out")
    assert load(tmp_path / "out")[2] == {"0/0/0": "同一天第二条", "1/0/0": "好看，但是, 有点长\n第二行"}


def test_dmsc_wrong_column_count_names_line_after_multiline_record(tmp_path: Path) -> None:
    lines = DMSC.read_bytes().split(b"\n")
    lines.insert(5, "9,90,Big Fish,大鱼,2017-01-22,91,某人,2015-01-01,3".encode())
    src = tmp_path / "DMSC.csv"
    src.write_bytes(b"\n".join(lines))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SourceError, match=r"DMSC.csv, line 6: expected 11 columns, found 9"):
        convert_dmsc(src, out)
    assert list(out.iterdir()) == []


def test_dmsc_missing_column(tmp_path: Path) -> None:
    src = tmp_path / "DMSC.csv"
    src.write_text("ID,Username,Date,Star\n1,a,2015-01-01,3\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"DMSC.csv, line 1: missing column\(s\) Movie_Name_EN"):
        convert_dmsc(src, tmp_path / "out")


def test_dmsc_cli_missing_file_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "inference_core.convert", "dmsc", str(missing), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 2
    assert "nope.csv" in proc.stderr and "cannot open" in proc.stderr
    assert not (tmp_path / "out").exists()
