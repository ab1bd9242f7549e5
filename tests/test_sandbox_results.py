"""The job API (run on the host here) and the strict results parser."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trustspace.crypto import sm3
from trustspace.sandbox import Aggregate, File, ResultsInvalid, Table, api, read_results


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The API pointed at a temporary output folder, with a clean list of outputs."""
    out = tmp_path / "out"
    data = tmp_path / "data"
    data.mkdir()
    (data / "people.csv").write_text("name,age\nA,30\nB,40\n")
    (tmp_path / "params.json").write_text('{"k": 5}')
    monkeypatch.setattr(api, "_OUT", out)
    monkeypatch.setattr(api, "_DATA", data)
    monkeypatch.setattr(api, "_PARAMS", tmp_path / "params.json")
    monkeypatch.setattr(api, "_outputs", [])
    yield out


def test_api_round_trip(job: Path) -> None:
    assert api.params() == {"k": 5}
    assert api.datasets() == ["people"]
    assert api.read_rows("people") == [{"name": "A", "age": "30"}, {"name": "B", "age": "40"}]
    api.aggregate("mean_age", 35.0, 2, statistic="mean", column="age")
    api.table("n_by_name", ["name", "n"], [["A", 1], ["B", 1]])
    api.table("age_by_name", ["name", "age"], [["A", 30.0], ["B", 40.0]], [1, 1], "mean")
    api.file("model.bin", b"\x00\x01")
    doc = json.loads((job / "results.json").read_text())
    assert doc["format"] == "trustspace.results/1"
    assert doc["outputs"][3] == {"name": "model.bin", "kind": "file", "path": "files/model.bin",
                                 "bytes": 2, "sm3": sm3(b"\x00\x01").hex()}
    results = read_results(job)
    assert results.names == ["mean_age", "n_by_name", "age_by_name", "model.bin"]
    assert results["mean_age"] == Aggregate("mean_age", 35.0, 2, "mean", "age")
    assert results["n_by_name"] == Table("n_by_name", "count", ("name", "n"),
                                         (("A", 1), ("B", 1)), None)
    model = results["model.bin"]
    assert isinstance(model, File) and model.path == job / "files" / "model.bin"
    assert sorted(os.listdir(job)) == ["files", "results.json"]


@pytest.mark.parametrize("call, match", [
    (lambda: api.aggregate("x", float("nan"), 1), "finite number"),
    (lambda: api.aggregate("x", True, 1), "finite number"),
    (lambda: api.aggregate("x", 1, -1), "non-negative"),
    (lambda: api.aggregate("x", 1, 1, statistic="p99"), "unknown statistic"),
    (lambda: api.aggregate("", 1, 1), "output name"),
    (lambda: api.table("t", ["a", "a"], []), "distinct"),
    (lambda: api.table("t", ["a", "n"], [["x"]]), "1 values for 2 columns"),
    (lambda: api.table("t", ["a", "n"], [["x", 1.5]]), "non-negative integer"),
    (lambda: api.table("t", ["a", "v"], [[["nested"], 1.5]], [1], "mean"), "keys must be"),
    (lambda: api.table("t", ["a", "v"], [["x", 1.5]], [1, 2], "mean"), "one non-negative"),
    (lambda: api.file("../x", b""), "file name"),
    (lambda: api.file(".hidden", b""), "file name"),
])
def test_api_refuses_bad_outputs(job: Path, call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_api_refuses_duplicate_names(job: Path) -> None:
    api.aggregate("x", 1, 1)
    with pytest.raises(ValueError, match="already written"):
        api.table("x", ["n"], [[1]])
    with pytest.raises(ValueError, match="already written"):
        api.file("x", b"")
    assert not (job / "files" / "x").exists()


def write(out: Path, doc: Any, raw: bytes | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_bytes(raw if raw is not None else json.dumps(doc).encode())
    return out


def doc(*outputs: dict[str, Any]) -> dict[str, Any]:
    return {"format": "trustspace.results/1", "outputs": list(outputs)}


AGG = {"name": "n", "kind": "aggregate", "value": 3, "count": 3}


@pytest.mark.parametrize("raw, match", [
    (b"{", "not valid JSON"),
    (b'{"format": "trustspace.results/1", "outputs": [], "outputs": []}', "duplicate key"),
    (b'{"format": "trustspace.results/1", "outputs": [{"name": "n", "kind": "aggregate", '
     b'"value": NaN, "count": 1}]}', "not a JSON number"),
    (json.dumps({"format": "trustspace.results/2", "outputs": []}).encode(), "format"),
    (json.dumps({**doc(), "extra": 1}).encode(), "exactly format and outputs"),
    (json.dumps(doc({**AGG, "value": "3"})).encode(), "finite number"),
    (json.dumps(doc({**AGG, "count": 1.5})).encode(), "non-negative integer or null"),
    (json.dumps(doc({**AGG, "secret": "x"})).encode(), "unknown \\['secret'\\]"),
    (json.dumps(doc({**AGG, "kind": "rows"})).encode(), "unknown kind"),
    (json.dumps(doc(AGG, AGG)).encode(), "unique"),
    (json.dumps(doc({**AGG, "name": "a\nb"})).encode(), "control characters"),
    (json.dumps(doc({"name": "t", "kind": "table", "statistic": "count", "columns": ["a", "n"],
                     "rows": [["x", -1]], "counts": None})).encode(), "non-negative integer"),
    (json.dumps(doc({"name": "t", "kind": "table", "statistic": "sum", "columns": ["a", "v"],
                     "rows": [[{"k": 1}, 1.0]], "counts": [1]})).encode(), "keys must be"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
])
def test_read_results_refuses_malformed(tmp_path: Path, raw: bytes, match: str) -> None:
    with pytest.raises(ResultsInvalid, match=match):
        read_results(write(tmp_path / "out", None, raw))


def test_read_results_checks_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "files").mkdir(parents=True)
    (out / "files" / "m.bin").write_bytes(b"abc")
    good = {"name": "m", "kind": "file", "path": "files/m.bin", "bytes": 3,
            "sm3": sm3(b"abc").hex()}
    assert read_results(write(out, doc(good)))["m"] == File("m", out / "files" / "m.bin", 3,
                                                            sm3(b"abc").hex())
    for bad, match in [({**good, "bytes": 4}, "not the declared 4"),
                       ({**good, "sm3": "0" * 64}, "SM3 digest"),
                       ({**good, "path": "files/../results.json"}, "path must be"),
                       ({**good, "path": "files/none.bin"}, "does not exist")]:
        with pytest.raises(ResultsInvalid, match=match):
            read_results(write(out, doc(bad)))
    (out / "files" / "link.bin").symlink_to(out / "files" / "m.bin")
    with pytest.raises(ResultsInvalid, match="not a regular file"):
        read_results(write(out, doc({**good, "path": "files/link.bin"})))
    (out / "files" / "link.bin").unlink()
    (out / "stray.txt").write_text("raw rows")
    with pytest.raises(ResultsInvalid, match="no output declares: stray.txt"):
        read_results(write(out, doc(good)))


def test_read_results_limits(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ResultsInvalid, match="no results.json"):
        out.mkdir()
        read_results(out)
    (out / "files").mkdir()
    (out / "files" / "big.bin").write_bytes(bytes(2048))
    with pytest.raises(ResultsInvalid, match="more than 1024 bytes"):
        read_results(write(out, doc()), max_bytes=1024)
    with pytest.raises(ResultsInvalid, match="at most 2"):
        read_results(write(out, doc(AGG, {**AGG, "name": "b"}, {**AGG, "name": "c"})),
                     max_outputs=2, max_bytes=1 << 20)
