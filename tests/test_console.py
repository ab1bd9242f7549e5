"""The regulator's console in a real browser (Debian's headless Chromium, driven by Selenium):
a data space on loopback makes an agreement, a delivered job and a refused one; the regulator
signs in to its own node's console (a wrong token is refused), traces the agreement through its
timeline with each receipt verified and its inclusion proof, opens the sealed policy, looks at
the data space and the tree heads, and sees a receipt altered in a bundle file flagged.

Screenshots go to the test's tmp dir and, when TS_SCREENSHOTS names a folder, there too."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.nodes import DataSpace, NodeProcess, dataspace, product_spec, research_offer, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without the background-networking flags Chromium's own connections are refused on a closed
# network and slow everything down.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,1000")

COUNT_BY_SEX = '''
from trustspace.sandbox import api
rows = api.read_rows("bp-visits")
groups = {}
for r in rows:
    groups[r["sex"]] = groups.get(r["sex"], 0) + 1
api.table("visits_by_sex", ["sex", "n"], [[s, n] for s, n in sorted(groups.items())],
          counts=[n for _, n in sorted(groups.items())], statistic="count")
'''


def write_visits(path: Path, n: int = 200) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["age", "sex", "sbp"])
        writer.writeheader()
        writer.writerows({"age": 30 + (i * 7) % 50, "sex": "FM"[i % 2],
                          "sbp": 105 + (i * 13) % 60} for i in range(n))


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataSpace]:
    root = tmp_path_factory.mktemp("console")
    with dataspace(root, "sqlite") as ds:
        provider = ds.add_member("hospital", "provider")
        ds.add_member("insurer", "consumer")
        ds.add_member("regulator", "regulator")
        data = root / "visits.csv"
        spec = product_spec(data, "bp-visits")
        write_visits(data)  # product_spec wrote its own small file there
        spec["offers"] = [research_offer(["sandbox"])]
        provider.ok("POST", "/api/products", spec)
        yield ds


def logged(node: NodeProcess, agreement: str, count: int) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        rows = node.ok("GET", "/api/receipts", agreement=agreement)["receipts"]
        done = len(rows) >= count and all(r["status"] == "logged" for r in rows)
        return rows if done else None

    return list(wait_for(check, timeout=60))


@pytest.fixture(scope="module")
def agreement(space: DataSpace, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One agreement's life: authorized, a job delivered, a job refused by policy."""
    provider, consumer = space.members["hospital"], space.members["insurer"]
    started = consumer.ok("POST", "/api/negotiations",
                          {"provider_url": provider.url, "dataset": "bp-visits"})

    def finalized() -> str | None:
        shown = consumer.ok("GET", f"/api/negotiations/{started['pid']}")
        assert shown["state"] != "TERMINATED", shown
        return shown["agreementId"] if shown["state"] == "FINALIZED" else None

    agreement = str(wait_for(finalized))
    again = consumer.ok("POST", "/api/negotiations",  # a second one: the graph fans out
                        {"provider_url": provider.url, "dataset": "bp-visits"})
    second = wait_for(lambda: (n := consumer.ok("GET", f"/api/negotiations/{again['pid']}"))
                      ["state"] == "FINALIZED" and n["agreementId"])
    logged(provider, str(second), 1)
    job = tmp_path_factory.mktemp("job") / "job.py"
    job.write_text(COUNT_BY_SEX)
    done = consumer.cli("run", agreement, str(job), "--purpose", "research")
    assert done.returncode == 0, done.stderr
    wrong = consumer.cli("run", agreement, str(job), "--purpose", "marketing")
    assert wrong.returncode == 1 and "policy-denied" in wrong.stderr
    kinds = sorted(r["kind"] for r in logged(provider, agreement, 3))
    assert kinds == ["authorization", "delivery", "refusal"]
    return agreement


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folders = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("TS_SCREENSHOTS"):
        folders.append(Path(os.environ["TS_SCREENSHOTS"]))
        folders[-1].mkdir(parents=True, exist_ok=True)
    return folders


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="ts-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def snap(driver: WebDriver, shots: list[Path], name: str) -> None:
    png = driver.get_screenshot_as_png()
    for folder in shots:
        (folder / f"console-{name}.png").write_bytes(png)


def text(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def replaced(page: WebElement) -> bool:
    """Whether `page` (an element of the old page) is gone: stale, or, as Chrome sometimes
    answers while it swaps documents, "Node with given id does not belong to the document"
    (seen in CI, from `staleness_of` itself)."""
    try:
        page.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def follow(driver: WebDriver, element: WebElement) -> None:
    """Click a link or button and wait until the next page has replaced this one."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 10).until(lambda _: replaced(page))
    # The old page is gone but the new one may still be parsing; a lookup then can hit a node of the
    # discarded document ("Node with given id does not belong to the document", seen in CI).
    WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def sign_in(driver: WebDriver, token: str) -> None:
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    follow(driver, driver.find_element(By.ID, "sign-in"))


def visit(driver: WebDriver, node: NodeProcess, path: str) -> None:
    """Open a console page, signing in first if the session is gone (each test stands alone)."""
    driver.get(f"{node.url}{path}")
    if "/console/login" in driver.current_url:
        sign_in(driver, node.token)
    assert driver.current_url.startswith(f"{node.url}{path.split('?')[0]}")


def test_sign_in_refuses_a_wrong_token_and_sets_a_strict_http_only_cookie(
        space: DataSpace, agreement: str, browser: WebDriver, shots: list[Path]) -> None:
    regulator = space.members["regulator"]
    browser.get(f"{regulator.url}/console/login")
    browser.delete_all_cookies()
    browser.get(f"{regulator.url}/console/receipts")
    assert browser.current_url.startswith(f"{regulator.url}/console/login")
    sign_in(browser, "not-the-token")
    assert "not valid for this node" in browser.find_element(By.ID, "login-error").text
    assert not browser.get_cookies()
    snap(browser, shots, "1-login-refused")
    sign_in(browser, regulator.token)
    assert browser.current_url == f"{regulator.url}/console/receipts"
    (cookie,) = browser.get_cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert regulator.token not in cookie["value"]
    assert "Verification OK" in browser.find_element(By.ID, "summary").text
    snap(browser, shots, "2-receipts")


def test_the_regulator_traces_an_agreement_through_its_timeline(
        space: DataSpace, agreement: str, browser: WebDriver, shots: list[Path]) -> None:
    regulator = space.members["regulator"]
    visit(browser, regulator, "/console/receipts")
    browser.find_element(By.ID, "f-agreement").send_keys(agreement)
    follow(browser, browser.find_element(By.ID, "search"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#receipts tr[id^=entry-]")
    assert len(rows) == 3 and all("verified" in r.text for r in rows)
    for field, value in (("f-product", "bp-visits"),
                         ("f-participant", "urn:trustspace:participant:insurer")):
        visit(browser, regulator, "/console/receipts")
        browser.find_element(By.ID, field).send_keys(value)
        follow(browser, browser.find_element(By.ID, "search"))
        assert len(browser.find_elements(By.CSS_SELECTOR, "#receipts tr[id^=entry-]")) == 4
    browser.find_element(By.ID, "f-since").send_keys("2999-01-01T00:00")
    follow(browser, browser.find_element(By.ID, "search"))
    assert "No receipts match" in text(browser)

    visit(browser, regulator, f"/console/receipts?agreement={agreement}")
    follow(browser, browser.find_element(By.PARTIAL_LINK_TEXT, agreement[:22]))
    steps = browser.find_elements(By.CSS_SELECTOR, "#timeline li.step")
    kinds = [s.find_element(By.CLASS_NAME, "kind").text.lower() for s in steps]
    assert kinds == ["authorization", "delivery", "refusal"]
    assert all("✔ verified" in s.text for s in steps)
    assert "hospital → insurer" in text(browser) and "0 failed verification" in text(browser)
    assert "policy-denied" in steps[2].text or "purpose" in steps[2].text.lower()
    steps[1].find_element(By.TAG_NAME, "summary").click()
    proof = steps[1].find_element(By.CSS_SELECTOR, "dl.proof").text
    assert "log index" in proof and "checkpoint size" in proof
    snap(browser, shots, "3-timeline")

    follow(browser, steps[0].find_element(By.PARTIAL_LINK_TEXT, "receipt #"))
    assert "✔ verified" in browser.find_element(By.ID, "status").text
    opened = json.loads(browser.find_element(By.CSS_SELECTOR, "#confidential pre").text)
    assert opened["policy"]["permission"][0]["constraint"][0]["rightOperand"] == "research"
    assert "provider" in text(browser) and "consumer" in text(browser)  # both signed
    snap(browser, shots, "4-receipt")
    # The confidential part is on the receipt's own page only.
    visit(browser, regulator, f"/console/agreements/{agreement}")
    assert '"research"' not in text(browser)


def test_the_data_space_and_the_tree_heads(
        space: DataSpace, agreement: str, browser: WebDriver, shots: list[Path]) -> None:
    regulator = space.members["regulator"]
    visit(browser, regulator, "/console/space")
    graph = browser.find_element(By.ID, "graph")
    labels = graph.text
    assert "hospital" in labels and "insurer" in labels and "bp-visits" in labels
    assert graph.find_elements(By.CSS_SELECTOR, f'a[href="/console/agreements/{agreement}"]')
    assert len(graph.find_elements(By.CSS_SELECTOR, "path.agreement")) == 2
    assert "regulator" in text(browser)
    snap(browser, shots, "5-space")
    visit(browser, regulator, "/console/heads")
    heads = browser.find_elements(By.CSS_SELECTOR, "#checkpoints tr")[1:]
    assert heads and all("✔ verified" in r.text for r in heads)
    assert "No anchors" in browser.find_element(By.ID, "anchors").text  # a local log
    snap(browser, shots, "6-heads")


def test_a_tampered_receipt_in_a_bundle_is_flagged(
        space: DataSpace, agreement: str, browser: WebDriver, shots: list[Path],
        tmp_path: Path) -> None:
    regulator = space.members["regulator"]
    bundle = regulator.ok("GET", "/api/audit/bundle", agreement=agreement)
    entry = next(e for e in bundle["entries"] if e["receipt"]["body"]["kind"] == "delivery")
    entry["receipt"]["body"]["public"]["rows"] = 7  # fewer rows than were read
    path = tmp_path / "tampered-bundle.json"
    path.write_text(json.dumps(bundle))
    visit(browser, regulator, "/console/receipts")
    browser.find_element(By.ID, "bundle-file").send_keys(str(path))
    follow(browser, browser.find_element(By.ID, "upload"))
    assert "tampered-bundle.json" in browser.find_element(By.ID, "source").text
    assert "FAILED" in browser.find_element(By.ID, "summary").text
    flagged = browser.find_element(By.ID, f"entry-{entry['index']}")
    assert "verification failed (inclusion-failed)" in flagged.text
    assert "flagged" in str(flagged.get_attribute("class"))
    others = browser.find_elements(By.CSS_SELECTOR, "#receipts tr[id^=entry-]:not(.flagged)")
    assert len(others) == 2
    snap(browser, shots, "7-tampered")
    follow(browser, flagged.find_element(By.PARTIAL_LINK_TEXT, "#"))
    assert "inclusion-failed" in text(browser)
    snap(browser, shots, "8-tampered-receipt")
    visit(browser, regulator, "/console/space")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#graph path.agreement.bad")) == 1
    visit(browser, regulator, f"/console/agreements/{agreement}")
    assert "1 failed verification" in text(browser)
    follow(browser, browser.find_element(By.ID, "live"))
    assert "live" in browser.find_element(By.ID, "source").text


def test_sign_out_and_what_needs_a_session(space: DataSpace, agreement: str,
                                           browser: WebDriver) -> None:
    regulator = space.members["regulator"]
    visit(browser, regulator, "/console/receipts")
    follow(browser, browser.find_element(By.ID, "logout"))
    assert browser.current_url == f"{regulator.url}/console/login"
    browser.get(f"{regulator.url}/console/heads")
    assert "/console/login" in browser.current_url
    # Without a browser: every page and the upload need a session; a made-up one is refused.
    for method, page in (("GET", "receipts"), ("GET", f"agreements/{agreement}"),
                         ("GET", "receipts/0"), ("GET", "space"), ("GET", "heads"),
                         ("POST", "bundle")):
        answer = httpx.request(method, f"{regulator.url}/console/{page}",
                               cookies={"ts_console": "made-up"})
        assert answer.status_code == 303, page
        assert answer.headers["location"].startswith("/console/login")
    # The token never reaches the node's log.
    assert regulator.token not in regulator.log.read_text()


def test_a_node_without_the_regulator_role_shows_why(space: DataSpace, agreement: str) -> None:
    insurer = space.members["insurer"]
    with httpx.Client(base_url=insurer.url) as client:
        signed_in = client.post("/console/login", data={"token": insurer.token})
        assert signed_in.status_code == 303
        page = client.get("/console/receipts")
    assert page.status_code == 403 and "wrong-role" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
