"""Output release (trustspace.sandbox.release): each rule releases a good output and refuses a bad
one with its reason; raw rows, small groups and huge outputs are refused; identifiers are masked;
Laplace noise has the documented scale; and SACRO's acro agrees with our threshold, n-k and
p-ratio rules on the same tables."""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from trustspace.contracts.policy import Decision, OutputRule
from trustspace.crypto import sm3
from trustspace.registry.classification import Level
from trustspace.sandbox.release import (
    DEFAULT_MIN_COUNT,
    RELEASE_FORMAT,
    RESULTS_FORMAT,
    Dominance,
    OutputKind,
    Reason,
    ReleaseDecision,
    ReleaseRefused,
    ReleaseRules,
    Statistic,
    check_release,
    logs_for_consumer,
    mask_text,
)

# --- the data --------------------------------------------------------------------------------

# GB 11643-1999 / ISO 7064 MOD 11-2, written here independently of the code under test.
_WEIGHTS = [2 ** (17 - i) % 11 for i in range(17)]


def id_check(first17: str) -> str:
    return "10X98765432"[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def resident_id(rng: random.Random) -> str:
    body = (f"{rng.choice(['110101', '310104', '440106', '510107'])}"
            f"{rng.randint(1950, 2004)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            f"{rng.randint(0, 999):03d}")
    return body + id_check(body)


SURNAMES = "王李张刘陈杨赵黄周吴"
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛", "明"]
CITIES = ["Beijing", "Shanghai", "Guangzhou", "Chengdu"]


def make_rows(n: int = 240, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append({
            "name": rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
            "phone": f"13{rng.randint(0, 9)}{i:08d}",
            "id_card": resident_id(rng),
            "email": f"user{i}@example.com",
            "sex": "F" if i % 2 else "M",
            "city": CITIES[(i // 2) % 4],
            "district": f"D{rng.randint(1, 40)}",
            "age": rng.randint(20, 69),
            "income": round(rng.uniform(3000, 30000), 2),
        })
    return rows


ROWS = make_rows()
N = len(ROWS)
RULES = ReleaseRules()


def groups(rows: Sequence[Mapping[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[Any]]:
    out: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    return dict(sorted(out.items()))


def results(*outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {"format": RESULTS_FORMAT, "outputs": list(outputs)}


def aggregate(name: str, value: float, count: int | None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "aggregate", "value": value, "count": count, **extra}


def table(name: str, statistic: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
          counts: Sequence[int] | None = None) -> dict[str, Any]:
    return {"name": name, "kind": "table", "statistic": statistic, "columns": list(columns),
            "rows": [list(r) for r in rows], "counts": None if counts is None else list(counts)}


def count_table(*keys: str, rows: Sequence[Mapping[str, Any]] = ROWS) -> dict[str, Any]:
    return table("by_" + "_".join(keys), "count", [*keys, "n"],
                 [[*k, len(g)] for k, g in groups(rows, *keys).items()])


def sum_table(*keys: str, column: str = "income", stat: str = "sum",
              rows: Sequence[Mapping[str, Any]] = ROWS) -> dict[str, Any]:
    out = []
    counts = []
    for k, g in groups(rows, *keys).items():
        values = [r[column] for r in g]
        out.append([*k, math.fsum(values) / (len(values) if stat == "mean" else 1)])
        counts.append(len(g))
    return table(f"{stat}_{column}_by_" + "_".join(keys), stat, [*keys, column], out, counts)


def check(res: Mapping[str, Any] | bytes, tmp: Path | None = None, rules: ReleaseRules = RULES,
          rows: Sequence[Mapping[str, Any]] | None = ROWS, **kw: Any) -> ReleaseDecision:
    return check_release(res, tmp or Path("/nonexistent"), rules, rows, **kw)


def released(decision: ReleaseDecision) -> dict[str, Any]:
    assert decision.refusal is None, str(decision.refusal)
    doc = json.loads(decision.require())
    assert doc["format"] == RELEASE_FORMAT
    return doc


def refused(decision: ReleaseDecision, reason: Reason, output: str | None = None) -> str:
    assert decision.refusal is not None, "released, expected a refusal"
    assert decision.refusal.reason is reason, str(decision.refusal)
    if output is not None:
        assert decision.refusal.output == output
    assert decision.released is None
    with pytest.raises(ReleaseRefused):
        decision.require()
    return str(decision.refusal)


# --- format and kinds ------------------------------------------------------------------------


def test_a_good_aggregate_is_released_with_the_checks_that_ran() -> None:
    total = math.fsum(r["income"] for r in ROWS)
    d = check(results(aggregate("total", total, N, statistic="sum", column="income")))
    doc = released(d)
    assert doc["outputs"] == [{"name": "total", "kind": "aggregate", "value": total, "count": N,
                               "statistic": "sum", "column": "income"}]
    assert list(d.checks) == ["format", "kinds", "min-count", "counts", "k-anonymity",
                              "dominance", "no-input-rows", "size"]
    assert doc["checks"] == list(d.checks)
    assert d.unverified == ()
    assert d.to_json()["decision"] == "release"


@pytest.mark.parametrize(("doc", "why"), [
    (b"not json", "not JSON"),
    (b'{"format": "trustspace.results/1", "outputs": [{"name": "a", "kind": "aggregate", '
     b'"value": NaN, "count": 20}]}', "NaN"),
    (b'{"format": "trustspace.results/1", "format": "x", "outputs": []}', "duplicate"),
    (b'{"format": "trustspace.results/2", "outputs": []}', "format"),
    (b'{"format": "trustspace.results/1", "outputs": [], "extra": 1}', "exactly"),
    (b'{"format": "trustspace.results/1", "outputs": [{"name": "a", "kind": "aggregate", '
     b'"value": 1, "count": 20, "note": "13812345678"}]}', "unknown ['note']"),
    (b'{"format": "trustspace.results/1", "outputs": [{"name": "a", "kind": "aggregate", '
     b'"value": true, "count": 20}]}', "finite number"),
    (b'{"format": "trustspace.results/1", "outputs": [{"name": "a", "kind": "plot", '
     b'"value": 1, "count": 20}]}', "unknown kind"),
    (b'{"format": "trustspace.results/1", "outputs": [{"name": "a", "kind": "table", '
     b'"statistic": "sum", "columns": ["x"], "rows": [[1, 2]], "counts": [20]}]}', "values"),
    (b'{"format": "trustspace.results/1", "outputs": [{"name": "a", "kind": "table", '
     b'"statistic": "entropy", "columns": ["x"], "rows": [[1]], "counts": [20]}]}',
     "unknown statistic"),
    (b'{"format": "trustspace.results/1", "outputs": [{"name": "a", "kind": "aggregate", '
     b'"value": 1, "count": 20}, {"name": "a", "kind": "aggregate", "value": 1, "count": 20}]}',
     "unique"),
])
def test_malformed_results_are_refused(doc: bytes, why: str) -> None:
    text = refused(check(doc, rows=None), Reason.FORMAT)
    assert why in text


def test_results_as_bytes_are_accepted() -> None:
    doc = json.dumps(results(aggregate("n", N, N, statistic="count"))).encode()
    assert released(check(doc))["outputs"][0]["value"] == N


def test_kinds_and_statistics_outside_the_rules_are_refused(tmp_path: Path) -> None:
    content = b"weights"
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "model.bin").write_bytes(content)
    file = {"name": "model", "kind": "file", "path": "files/model.bin", "bytes": len(content),
            "sm3": sm3(content).hex()}
    refused(check(results(file), tmp_path), Reason.KIND_NOT_ALLOWED, "model")
    with_files = ReleaseRules(allowed_kinds=frozenset(OutputKind))
    assert released(check(results(file), tmp_path, with_files))["outputs"][0]["kind"] == "file"

    oldest = aggregate("oldest", max(r["age"] for r in ROWS), N, statistic="max", column="age")
    refused(check(results(oldest)), Reason.STATISTIC_NOT_ALLOWED, "oldest")
    endpoints = ReleaseRules(statistics=frozenset(Statistic))
    released(check(results(oldest), rules=endpoints))
    only_tables = ReleaseRules(allowed_kinds=frozenset({OutputKind.TABLE}))
    refused(check(results(oldest), rules=only_tables), Reason.KIND_NOT_ALLOWED)


# --- min-count -------------------------------------------------------------------------------


def test_an_aggregate_over_fewer_than_k_records_is_refused() -> None:
    few = ROWS[:9]
    bad = aggregate("mean_income", math.fsum(r["income"] for r in few) / 9, 9)
    assert refused(check(results(bad)), Reason.COUNT_BELOW_K, "mean_income") == (
        "count-below-k: aggregate mean_income has 9 records (< 10)")
    good = aggregate("mean_income", 1.0, 10)
    released(check(results(good)))
    refused(check(results(good), rules=ReleaseRules(min_count=11)), Reason.COUNT_BELOW_K)


def test_an_aggregate_without_a_count_is_refused() -> None:
    refused(check(results(aggregate("x", 1.0, None))), Reason.COUNTS_MISSING, "x")


def test_an_aggregate_cannot_claim_more_records_than_the_input_has() -> None:
    refused(check(results(aggregate("x", 1.0, N + 1))), Reason.COUNT_MISMATCH, "x")
    refused(check(results(aggregate("n", N - 1, N, statistic="count"))), Reason.COUNT_MISMATCH)


def test_a_count_table_row_below_k_is_refused_with_the_row() -> None:
    good = count_table("sex", "city")
    assert all(row[-1] >= 10 for row in good["rows"])
    released(check(results(good)))
    bad = count_table("city", "district")
    small = next(i for i, row in enumerate(bad["rows"]) if row[-1] < 10)
    text = refused(check(results(bad)), Reason.COUNT_BELOW_K, "by_city_district")
    assert text == (f"count-below-k: table by_city_district row {small} has "
                    f"{bad['rows'][small][-1]} records (< 10)")
    assert check(results(bad)).refusal.row == small  # type: ignore[union-attr]


def test_a_count_table_whose_counts_differ_from_its_values_is_refused() -> None:
    t = count_table("sex", "city")
    t["counts"] = [row[-1] for row in t["rows"]]
    released(check(results(t)))
    t["counts"][2] += 1
    refused(check(results(t)), Reason.COUNT_MISMATCH, "by_sex_city")


def test_counts_larger_than_the_data_allows_are_refused() -> None:
    t = count_table("sex", "city")
    t["rows"][1][-1] += 5  # more records than the input has with these keys
    assert refused(check(results(t)), Reason.COUNT_MISMATCH).startswith(
        "count-mismatch: table by_sex_city row 1 declares")


def test_a_filtered_count_is_accepted_as_the_codes_word() -> None:
    adults = [r for r in ROWS if r["age"] >= 30]
    d = check(results(count_table("sex", "city", rows=adults)))
    released(d)


def test_a_magnitude_table_without_counts_is_refused() -> None:
    t = sum_table("city")
    t["counts"] = None
    refused(check(results(t)), Reason.COUNTS_MISSING, t["name"])


def test_a_recomputed_value_must_match() -> None:
    t = sum_table("sex", "city", stat="mean")
    d = check(results(t))
    released(d)
    assert d.unverified == ()
    t["rows"][0][-1] += 1.0
    refused(check(results(t)), Reason.VALUE_MISMATCH, t["name"])


# --- size ------------------------------------------------------------------------------------


def test_a_huge_output_is_refused() -> None:
    big = table("big", "count", ["k", "n"], [[f"key-{i:06d}", 10] for i in range(2000)])
    small_cap = ReleaseRules(max_bytes=20_000)
    assert "at most 20000" in refused(check(results(big), rules=small_cap, rows=None),
                                      Reason.TOO_LARGE)
    released(check(results(big), rows=None))
    huge = json.dumps(results(big)).encode() + b" " * 100_000
    refused(check(huge, rules=small_cap, rows=None), Reason.TOO_LARGE)


def test_the_policy_and_the_level_set_the_rules() -> None:
    decision = Decision(permitted=True, policy_id="p", path="", reason="", output_rules=(
        OutputRule("minAggregation", 5, "permission[0]"),
        OutputRule("maxResultBytes", 4096, "permission[0]")))
    general = ReleaseRules.from_decision(decision, Level.GENERAL)
    assert (general.min_count, general.max_bytes, general.mask_identifiers) == (5, 4096, False)
    important = ReleaseRules.from_decision(decision, Level.IMPORTANT)
    assert (important.min_count, important.mask_identifiers) == (DEFAULT_MIN_COUNT, True)
    silent = Decision(permitted=True, policy_id="p", path="", reason="")
    assert ReleaseRules.from_decision(silent, Level.GENERAL).min_count == 10
    denied = Decision(permitted=False, policy_id="p", path="", reason="no")
    with pytest.raises(ValueError, match="denied"):
        ReleaseRules.from_decision(denied, Level.GENERAL)
    with pytest.raises(ValueError):
        ReleaseRules(min_count=0)
    with pytest.raises(ValueError):
        ReleaseRules(dp_epsilon=-1.0)


# --- raw rows and k-anonymity ----------------------------------------------------------------


def raw_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]],
              names: Sequence[str] | None = None) -> dict[str, Any]:
    return table("raw", "sum", names or columns, [[r[c] for c in columns] for r in rows],
                 [10] * len(rows))


def test_raw_rows_returned_as_a_table_are_refused() -> None:
    columns = ["name", "phone", "sex", "city", "age", "income"]
    refused(check(results(raw_table(columns, ROWS[:20]))), Reason.COUNT_MISMATCH, "raw")
    # renamed columns: the node cannot recount, but the key values single people out
    renamed = [f"c{i}" for i in range(len(columns))]
    text = refused(check(results(raw_table(columns, ROWS[:20], renamed))), Reason.INPUT_ROW)
    assert text == "input-row: table raw row 0: its key values single out one input row"
    # and so with k = 1, where single records may be counted but not reproduced
    k1 = ReleaseRules(min_count=1)
    refused(check(results(raw_table(columns, ROWS[:20], renamed)), rules=k1), Reason.INPUT_ROW)
    # the refusal names no data value
    assert ROWS[0]["name"] not in text and ROWS[0]["phone"] not in text


def test_a_whole_input_row_is_recognised_whatever_its_column_order_and_types() -> None:
    # no identifying column: 15 people share sex, city and age, so the keys single out nobody;
    # but a row carrying one person's income next to them is that person's whole record
    coarse = [{"sex": "F", "city": "Lhasa", "age": 30, "income": 1000.0 + i} for i in range(15)]
    t = table("t", "sum", ["where", "years", "who", "amount"],
              [["Lhasa", " 30 ", "F", 1003.0]], [10])
    text = refused(check(results(t), rows=coarse), Reason.INPUT_ROW, "t")
    assert text == "input-row: table t row 0 contains every value of an input row"
    t["rows"][0][-1] = 1003.5  # not anyone's income
    d = check(results(t), rows=coarse)
    released(d)
    assert any("dominance" in u for u in d.unverified)


def test_key_values_shared_by_fewer_than_k_input_rows_are_refused() -> None:
    # honest counts of a fine table, but under other column names: the node cannot recount,
    # yet it sees that some (city, district) combinations belong to fewer than 10 people
    t = count_table("city", "district")
    t["columns"] = ["town", "area", "n"]
    # lie about the counts, and leave out the combinations of a single person (another rule)
    t["rows"] = [[*row[:2], 10] for row in t["rows"] if row[-1] > 1]
    text = refused(check(results(t)), Reason.KEYS_BELOW_K)
    assert "shared by" in text and "(< 10)" in text
    # coarse keys under other names pass: each value is shared by many rows
    coarse = count_table("sex", "city")
    coarse["columns"] = ["gender", "town", "n"]
    released(check(results(coarse)))


def test_derived_keys_are_released_and_their_counts_reported_unverified() -> None:
    band = [dict(r, band=f"{r['age'] // 10 * 10}s") for r in ROWS]
    t = sum_table("band", rows=band)
    d = check(results(t))
    released(d)
    assert any(u.startswith(f"dominance: {t['name']}") for u in d.unverified)
    strict = ReleaseRules(dominance=Dominance(refuse_unverifiable=True))
    refused(check(results(t), rules=strict), Reason.DOMINANCE_UNVERIFIABLE, t["name"])


def test_without_input_rows_the_input_checks_are_unverified() -> None:
    d = check(results(count_table("sex", "city")), rows=None)
    released(d)
    assert "no-input-rows" not in d.checks
    assert d.unverified and "input rows were not given" in d.unverified[0]


def write_file(tmp: Path, name: str, content: bytes) -> dict[str, Any]:
    (tmp / "files").mkdir(exist_ok=True)
    (tmp / "files" / name).write_bytes(content)
    return {"name": name, "kind": "file", "path": f"files/{name}", "bytes": len(content),
            "sm3": sm3(content).hex()}


FILES = ReleaseRules(allowed_kinds=frozenset(OutputKind))


def test_a_csv_file_of_input_rows_is_refused(tmp_path: Path) -> None:
    lines = ["name,phone,city,income"] + [
        f"{r['name']},{r['phone']},{r['city']},{r['income']}" for r in ROWS[:5]]
    f = write_file(tmp_path, "dump.csv", "\n".join(lines).encode())
    refused(check(results(f), tmp_path, FILES), Reason.INPUT_ROW, "dump.csv")
    whole = ["\t".join(str(v) for v in r.values()) for r in ROWS[:5]]
    f = write_file(tmp_path, "dump.tsv", "\n".join(whole).encode())
    refused(check(results(f), tmp_path, ReleaseRules(min_count=1, allowed_kinds=FILES
                                                     .allowed_kinds)), Reason.INPUT_ROW)
    summary = "city,n\n" + "\n".join(f"{c},{sum(r['city'] == c for r in ROWS)}" for c in CITIES)
    f = write_file(tmp_path, "summary.csv", summary.encode())
    d = check(results(f), tmp_path, FILES)
    doc = released(d)
    assert doc["outputs"][0]["sm3"] == sm3(summary.encode()).hex()
    assert d.files[0].content == summary.encode()


def test_binary_files_are_unverified(tmp_path: Path) -> None:
    f = write_file(tmp_path, "model.bin", bytes(range(256)))
    d = check(results(f), tmp_path, FILES)
    released(d)
    assert any("binary" in u for u in d.unverified)


@pytest.mark.parametrize("tamper", ["digest", "size", "symlink", "traversal", "missing", "dir"])
def test_a_file_that_is_not_what_it_claims_is_refused(tmp_path: Path, tamper: str) -> None:
    f = write_file(tmp_path, "out.txt", b"hello")
    if tamper == "digest":
        f["sm3"] = sm3(b"other").hex()
    elif tamper == "size":
        f["bytes"] = 4
    elif tamper == "symlink":
        secret = tmp_path / "secret"
        secret.write_bytes(b"hello")
        os.remove(tmp_path / "files" / "out.txt")
        os.symlink(secret, tmp_path / "files" / "out.txt")
    elif tamper == "traversal":
        f["path"] = "files/../secret"
    elif tamper == "missing":
        f["path"] = "files/absent.txt"
    else:
        os.remove(tmp_path / "files" / "out.txt")
        os.mkdir(tmp_path / "files" / "out.txt")
    refused(check(results(f), tmp_path, FILES), Reason.FILE_INVALID, "out.txt")


def test_a_symlinked_files_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    (real / "a.txt").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(real, out / "files")
    f = {"name": "a", "kind": "file", "path": "files/a.txt", "bytes": 1, "sm3": sm3(b"x").hex()}
    refused(check(results(f), out, FILES), Reason.FILE_INVALID)


# --- dominance -------------------------------------------------------------------------------


def dominated_rows(contributions: Sequence[float], city: str = "Lhasa") -> list[dict[str, Any]]:
    extra = [dict(ROWS[0], name=f"x{i}", city=city, income=c)
             for i, c in enumerate(contributions)]
    return ROWS + extra


def test_the_nk_rule_refuses_a_dominated_sum() -> None:
    rows = dominated_rows([1_000_000.0, 5_000.0] + [100.0] * 10)
    t = sum_table("city", rows=rows)
    lhasa = next(i for i, row in enumerate(t["rows"]) if row[0] == "Lhasa")
    text = refused(check(results(t), rows=rows), Reason.DOMINANCE_NK, t["name"])
    assert text == (f"dominance-nk: table {t['name']} row {lhasa}: the 2 largest contributions "
                    "are >= 90% of the total")
    fair = dominated_rows([1000.0 + i for i in range(12)])
    d = check(results(sum_table("city", rows=fair)), rows=fair)
    released(d)
    assert "dominance" in d.checks and d.unverified == ()


def test_the_p_ratio_rule_refuses_when_the_rest_is_too_small() -> None:
    # top two 60% + 35%; the rest is 5% of the total, under 10% of the largest: p-ratio fails
    rows = dominated_rows([6000.0, 3500.0] + [50.0] * 10)
    only_p = ReleaseRules(dominance=Dominance(nk_k=0.99))
    t = sum_table("city", rows=rows, stat="mean")
    refused(check(results(t), rules=only_p, rows=rows), Reason.DOMINANCE_P_RATIO)
    assert Dominance().check([6000.0, 3500.0] + [50.0] * 10) == (
        Reason.DOMINANCE_NK, Reason.DOMINANCE_P_RATIO)
    assert Dominance().check([50.0, 45.0] + [1.0] * 10) == (Reason.DOMINANCE_NK,)
    assert Dominance().check([10.0] * 12) == ()


def test_negative_contributions_are_refused() -> None:
    rows = dominated_rows([-5.0] + [100.0] * 11)
    refused(check(results(sum_table("city", rows=rows)), rows=rows),
            Reason.DOMINANCE_NEGATIVE)


def test_dominance_of_a_whole_column_aggregate() -> None:
    rows = dominated_rows([1e9])
    total = math.fsum(r["income"] for r in rows)
    agg = aggregate("total", total, len(rows), statistic="sum", column="income")
    refused(check(results(agg), rows=rows), Reason.DOMINANCE_NK, "total")
    wrong = aggregate("total", total * 1.01, len(rows), statistic="sum", column="income")
    refused(check(results(wrong), rows=rows), Reason.VALUE_MISMATCH, "total")


# --- masking ---------------------------------------------------------------------------------


def test_identifiers_are_masked_in_text() -> None:
    rng = random.Random(3)
    for _ in range(50):
        rid = resident_id(rng)
        assert mask_text(f"身份证{rid}。") == f"身份证{rid[0]}{'*' * 16}{rid[-1]}。"
    wrong_check = "11010119900307123" + ("0" if id_check("11010119900307123") != "0" else "1")
    assert mask_text(wrong_check) == "1" + "*" * 16 + wrong_check[-1]  # a typo still masked
    assert mask_text("110101199013071234") == "110101199013071234"  # month 13: not an ID
    assert mask_text("order 202405171234567890123") == "order 202405171234567890123"
    assert mask_text("110101900307123") == "1" + "*" * 13 + "3"  # 15-digit first generation
    assert mask_text("电话13812345678，备用+86 139-1234-5678") == (
        "电话138****5678，备用+86 139-****-5678")
    assert mask_text("12812345678 and 1381234567") == "12812345678 and 1381234567"
    assert mask_text("联系 zhang.san@example.com.cn 或 li@a.cn") == (
        "联系 z***@example.com.cn 或 l***@a.cn")
    assert mask_text("13812345678@163.com") == "1***@163.com"


def test_masking_applies_to_released_strings_and_name_columns(tmp_path: Path) -> None:
    rid = resident_id(random.Random(1))
    t = table("contacts", "count", ["name", "note", "phone_int", "n"], [
        ["张三", f"call 13812345678 or mail zs@example.com, id {rid}", 13912345678, 12],
        ["李四", "nothing here", 42, 15],
    ])
    f = write_file(tmp_path, "notes.txt", "王五 13700001111\n".encode())
    rules = ReleaseRules(mask_identifiers=True, name_columns=frozenset({"name"}),
                         allowed_kinds=frozenset(OutputKind))
    d = check(results(t, f), tmp_path, rules, rows=None)
    doc = released(d)
    rows = doc["outputs"][0]["rows"]
    assert rows[0] == ["***", f"call 138****5678 or mail z***@example.com, id {rid[0]}"
                       f"{'*' * 16}{rid[-1]}", "139****5678", 12]
    assert rows[1] == ["***", "nothing here", 42, 15]
    masked = "王五 137****1111\n".encode()
    assert d.files[0].content == masked
    assert doc["outputs"][1]["sm3"] == sm3(masked).hex() == d.files[0].sm3
    assert "masking" in d.checks and doc["masked"] is True
    # without masking nothing changes
    plain = released(check(results(t), rules=ReleaseRules(), rows=None))
    assert plain["outputs"][0]["rows"][0][0] == "张三"


def test_a_binary_file_cannot_be_masked(tmp_path: Path) -> None:
    f = write_file(tmp_path, "model.bin", b"\xff\xfe\x00weights")
    rules = ReleaseRules(mask_identifiers=True, allowed_kinds=frozenset(OutputKind))
    refused(check(results(f), tmp_path, rules, rows=None), Reason.UNMASKABLE_FILE)


def test_logs_go_to_the_consumer_only_when_allowed() -> None:
    assert logs_for_consumer(b"row: 13812345678", b"", allowed=False) is None
    logs = logs_for_consumer(b"row: 13812345678", b"\xffoops", allowed=True)
    assert logs is not None
    assert json.loads(logs) == {"stdout": "row: 138****5678", "stderr": "\ufffdoops"}
    cut = logs_for_consumer(b"x" * 100, b"", allowed=True, max_bytes=10)
    assert cut is not None and json.loads(cut)["stdout"] == "x" * 10 + "\n[... 90 bytes cut]"


# --- differential privacy --------------------------------------------------------------------


def laplace_cdf(x: float, scale: float) -> float:
    return 0.5 * math.exp(x / scale) if x < 0 else 1 - 0.5 * math.exp(-x / scale)


def test_dp_noise_is_laplace_with_the_documented_scale() -> None:
    rules = ReleaseRules(dp_epsilon=1.0, dp_bounds={"income": (0.0, 100.0)})
    true = 5000.0
    agg = results(aggregate("total", true, 100, statistic="sum", column="income"))
    rng = random.Random(20240517)
    noise = []
    for _ in range(2000):
        doc = released(check(agg, rules=rules, rows=None, rng=rng))
        out = doc["outputs"][0]
        assert out["dp"] == {"epsilon": 1.0, "sumScale": 200.0, "countScale": 2.0}
        noise.append(out["value"] - true)
    assert doc["dp"]["epsilon"] == 1.0 and "dp" in doc["checks"]
    scale = 200.0  # sensitivity max(|0|, |100|) over half of epsilon 1
    assert all(n != 0 for n in noise[:10])
    assert abs(sum(noise) / len(noise)) < 3 * scale * math.sqrt(2) / math.sqrt(len(noise))
    assert sum(abs(n) for n in noise) / len(noise) == pytest.approx(scale, rel=0.08)
    ordered = sorted(noise)
    ks = max(max(abs((i + 1) / len(ordered) - laplace_cdf(x, scale)),
                 abs(i / len(ordered) - laplace_cdf(x, scale))) for i, x in enumerate(ordered))
    assert ks < 1.36 / math.sqrt(len(ordered))  # Kolmogorov-Smirnov at the 5% level
    wrong = max(max(abs((i + 1) / len(ordered) - laplace_cdf(x, scale / 2)),
                    abs(i / len(ordered) - laplace_cdf(x, scale / 2)))
                for i, x in enumerate(ordered))
    assert wrong > 1.36 / math.sqrt(len(ordered))  # the test tells scales apart


def test_dp_counts_and_tables_are_noised_and_the_budget_split() -> None:
    rules = ReleaseRules(dp_epsilon=2.0, dp_bounds={"income": (0.0, 50_000.0)})
    counts = count_table("sex", "city")
    means = sum_table("sex", "city", stat="mean")
    doc = released(check(results(counts, means), rules=rules, rng=random.Random(1)))
    noisy_counts, noisy_means = doc["outputs"]
    assert noisy_counts["dp"] == {"epsilon": 1.0, "countScale": 1.0}
    assert noisy_means["dp"]["epsilon"] == 1.0
    assert [r[-1] for r in noisy_counts["rows"]] != [r[-1] for r in counts["rows"]]
    assert all(isinstance(r[-1], int) and r[-1] >= 0 for r in noisy_counts["rows"])
    assert noisy_counts["rows"][0][:2] == counts["rows"][0][:2]
    for row, before in zip(noisy_means["rows"], means["rows"], strict=True):
        assert 0.0 <= row[-1] <= 50_000.0 and row[-1] != before[-1]
    # a count aggregate: the same noisy number as value and count, default CSPRNG
    doc = released(check(results(aggregate("n", N, N, statistic="count")), rows=None,
                         rules=ReleaseRules(dp_epsilon=0.5)))
    assert doc["outputs"][0]["value"] == doc["outputs"][0]["count"]


@pytest.mark.parametrize(("output", "reason"), [
    (table("t", "sum", ["city", "income"], [["Beijing", 1.0]]), Reason.DP_NEEDS_COUNT),
    (aggregate("a", 1.0, None, statistic="sum", column="income"), Reason.DP_NEEDS_COUNT),
    (aggregate("a", 1.0, 20), Reason.DP_UNSUPPORTED),  # no statistic: no sensitivity
    (aggregate("a", 1.0, 20, statistic="median", column="income"), Reason.DP_UNSUPPORTED),
    (aggregate("a", 1.0, 20, statistic="sum", column="age"), Reason.DP_NO_BOUNDS),
    (table("t", "count", ["city", "n"], [["B", 20], ["B", 30]]), Reason.DP_UNSUPPORTED),
])
def test_dp_refuses_what_it_cannot_noise(output: dict[str, Any], reason: Reason) -> None:
    rules = ReleaseRules(dp_epsilon=1.0, dp_bounds={"income": (0.0, 1e5)})
    refused(check(results(output), rules=rules, rows=None), reason)


def test_dp_refuses_bounds_the_data_violates(tmp_path: Path) -> None:
    rules = ReleaseRules(dp_epsilon=1.0, dp_bounds={"income": (0.0, 10_000.0)},
                         allowed_kinds=frozenset(OutputKind))
    agg = aggregate("total", 1.0, N, statistic="sum", column="income")
    refused(check(results(agg), rules=rules), Reason.DP_BOUNDS_VIOLATED)
    f = write_file(tmp_path, "m.bin", b"\x00")
    refused(check(results(f), tmp_path, rules, rows=None), Reason.DP_UNSUPPORTED)


# --- cross-check with SACRO's acro -----------------------------------------------------------


@pytest.mark.interop
def test_acro_and_our_rules_agree_on_the_same_tables() -> None:
    """acro (SACRO, MIT licence) run on pandas crosstabs of generated data: its
    MinimumThresholdCheck, NKCheck and PPercentCheck cells against our min-count and `Dominance`
    per cell, and our release decision for each whole table against acro's overall status."""
    import logging

    import acro  # an interop dependency: only these tests need it
    import pandas as pd

    logging.getLogger("acro").setLevel(logging.WARNING)
    session = acro.ACRO(suppress=False)
    rng = random.Random(11)
    disagreements = []
    flagged: Counter[str] = Counter()
    for trial in range(30):
        rows = []
        for g in "abcd":
            for h in "xy":
                size = rng.choice([3, 8, 12, 20, 40])
                shape = rng.choice(["even", "one", "two", "gap"])
                for i in range(size):
                    value = rng.uniform(10, 100)
                    if shape == "one" and i == 0:
                        value = rng.uniform(500, 50_000)
                    if shape == "two" and i < 2:
                        value = rng.uniform(2_000, 20_000)
                    if shape == "gap" and i < 2:
                        value = [900.0, 700.0][i] * rng.uniform(1, 3)
                    rows.append({"g": g, "h": h, "v": round(value, 3)})
        df = pd.DataFrame(rows)
        acro_table = session.crosstab(df.g, df.h, values=df.v, aggfunc="sum")
        outcome = list(session.results.results.values())[-1]
        cells = {check: {tuple(c) for c in found} for check, found in outcome.sdc["cells"].items()}
        ours_table = sum_table("g", "h", column="v", rows=rows)
        ours_rows = {tuple(r[:2]): (r, n) for r, n in zip(ours_table["rows"],
                                                          ours_table["counts"], strict=True)}
        by_group = groups(rows, "g", "h")
        for i, g in enumerate(acro_table.index):
            for j, h in enumerate(acro_table.columns):
                contributions = [r["v"] for r in by_group[(g, h)]]
                ours = set()
                if len(contributions) < 10:
                    ours.add("MinimumThresholdCheck")
                failed = Dominance().check(contributions)
                if Reason.DOMINANCE_NK in failed:
                    ours.add("NKCheck")
                if Reason.DOMINANCE_P_RATIO in failed:
                    ours.add("PPercentCheck")
                theirs = {c for c in ("MinimumThresholdCheck", "NKCheck", "PPercentCheck")
                          if (i, j) in cells.get(c, set())}
                flagged.update(theirs)
                if ours != theirs:
                    disagreements.append((trial, g, h, sorted(ours), sorted(theirs)))
        decision = check(results(ours_table), rows=rows)
        assert decision.permitted == (outcome.status == "pass"), (trial, outcome.status,
                                                                  decision.refusal)
        assert set(ours_rows) == set(by_group)
    assert not disagreements, disagreements[:5]
    # the generated tables exercise every rule, both ways
    assert all(flagged[c] > 0 for c in ("MinimumThresholdCheck", "NKCheck", "PPercentCheck"))


@pytest.mark.interop
def test_acro_and_our_threshold_agree_on_count_tables() -> None:
    import logging

    import acro
    import pandas as pd

    logging.getLogger("acro").setLevel(logging.WARNING)
    session = acro.ACRO(suppress=False)
    rng = random.Random(5)
    for _ in range(20):
        size = rng.randint(60, 200)
        rows = [{"g": rng.choice("abc"), "h": rng.choice("xyz")} for _ in range(size)]
        df = pd.DataFrame(rows)
        session.crosstab(df.g, df.h)
        outcome = list(session.results.results.values())[-1]
        t = count_table("g", "h", rows=rows)
        # acro also flags empty cells (zeros are disclosive); our table has no empty rows, so an
        # empty combination is checked as a row of count 0
        present = {tuple(r[:2]) for r in t["rows"]}
        t["rows"] += [[g, h, 0] for g in "abc" for h in "xyz" if (g, h) not in present]
        decision = check(results(t), rows=rows)
        assert decision.permitted == (outcome.status == "pass")
