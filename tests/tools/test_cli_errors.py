"""Every command of docs/cli.md, run as a user would (a new process, no terminal), on an empty home and on bad
input: it answers in words, never with a traceback; bad input is refused before the encoder (torch) loads or the
database starts, and the first line a user reads comes at once.

"At once" is checked twice. Structurally: the process reports at exit whether torch or open_clip was imported,
and the home shows whether the embedded database was started. In time: the first line of output must arrive
within 2 s of the command's own work on top of what starting Python and the CLI costs on this machine right
now (`raiox --help`, measured in the same test), so a shared, loaded CPU does not fail it, while the 10–20 s
of an encoder loading or a pool giving up would."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from raiox.tools.local import SETTING_NAMES, free_port
from support import REPO, make_xray

# Run the CLI as `raiox` would, and at exit say which heavy modules were imported.
PROBE = """
import atexit, json, os, sys
def _report():
    with open(os.environ["RAIOX_PROBE_OUT"], "w") as out:
        json.dump({name: name in sys.modules for name in ("torch", "open_clip")}, out)
atexit.register(_report)
from raiox.tools.cli import main
sys.argv[0] = "raiox"
main()
"""
OWN_WORK_SECONDS = 2.0


@dataclass
class Run:
    args: list[str]
    code: int
    output: str  # stdout and stderr, interleaved as they arrived
    first_line_seconds: float | None
    seconds: float
    heavy: dict[str, bool]

    def describe(self) -> str:
        return f"raiox {' '.join(self.args)} (exit {self.code}, {self.seconds:.1f} s):\n{self.output}"


class Cli:
    """Runs `raiox ARGS` in a new process with only the given settings, in a folder without a `.env`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.runs = 0
        self._lock = threading.Lock()

    def env(self, home: Path, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
        env.update({"RAIOX_HOME": str(home), "OMP_NUM_THREADS": "1", **settings})
        return env

    def __call__(self, *args: str, home: Path, stdin: bytes | None = None, **settings: str) -> Run:
        with self._lock:
            self.runs += 1
            probe = self.folder / f"probe-{self.runs}.json"
        env = {**self.env(home, **settings), "RAIOX_PROBE_OUT": str(probe)}
        lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-c", PROBE, *args], env=env, cwd=self.folder,
                                   stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def read(stream) -> None:  # type: ignore[no-untyped-def]
            for raw in iter(stream.readline, b""):
                lines.put((time.monotonic() - started, raw.decode(errors="replace")))
            lines.put(None)

        readers = [threading.Thread(target=read, args=(stream,), daemon=True)
                   for stream in (process.stdout, process.stderr)]
        for reader in readers:
            reader.start()
        if stdin is not None:
            assert process.stdin is not None
            process.stdin.write(stdin)
            process.stdin.close()
        code = process.wait(timeout=300)
        seconds = time.monotonic() - started
        for reader in readers:
            reader.join(30)
        received = []
        while True:
            try:
                item = lines.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                received.append(item)
        received.sort(key=lambda item: item[0])
        heavy = json.loads(probe.read_text()) if probe.exists() else {}
        return Run(list(args), code, "".join(line for _, line in received),
                   received[0][0] if received else None, seconds, heavy)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


PARALLEL = 2  # bad-input runs two at a time (the machine has two cores); the baseline is measured the same way


def _startup(cli: Cli, home: Path, parallel: int) -> float:
    """What starting Python and the CLI (every command's module) costs here now, `parallel` processes at a
    time: the slowest of a round of `--help`s, the best of two rounds."""
    with ThreadPoolExecutor(parallel) as pool:
        return min(max(pool.map(lambda _: cli("--help", home=home).seconds, range(parallel))) for _ in range(2))


@pytest.fixture
def startup_seconds(cli: Cli, tmp_path: Path) -> float:
    return _startup(cli, tmp_path / "help-home", 1)


def _leaf_commands() -> set[str]:
    """`raiox X Y` for every command docs/cli.md documents that has no sub-commands."""
    headings = re.findall(r"^## raiox (.+)$", (REPO / "docs" / "cli.md").read_text(), flags=re.M)
    return {h for h in headings if not any(other.startswith(h + " ") for other in headings)}


def _command_of(args: list[str]) -> str:
    """The documented command `args` runs (`catalog import`, `match`, …)."""
    words = [word for word in args if not word.startswith("-")]
    for length in (2, 1):
        if " ".join(words[:length]) in _leaf_commands():
            return " ".join(words[:length])
    raise AssertionError(f"{args} names no documented command")


def check_answer(run: Run, *, expect: str, code: int | tuple[int, ...] = (1, 2), limit: float) -> None:
    """No traceback, the expected words, the expected exit status, no torch, the first line at once."""
    codes = (code,) if isinstance(code, int) else code
    assert "Traceback" not in run.output and "psycopg.pool" not in run.output, run.describe()
    assert run.code in codes, run.describe()
    assert expect.lower() in run.output.lower(), run.describe()
    assert run.heavy == {"torch": False, "open_clip": False}, run.describe()
    assert run.first_line_seconds is not None and run.first_line_seconds <= limit, \
        f"first line after {run.first_line_seconds} s (limit {limit:.1f} s): {run.describe()}"


@pytest.fixture
def inputs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Files a careless user hands over: a text file, a folder of them, manifests that are wrong."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    text = folder / "notes.txt"
    text.write_text("not an X-ray\n")
    film = folder / "film.png"
    film.write_bytes(make_xray(1))
    not_films = folder / "not-films" / "System A"
    not_films.mkdir(parents=True)
    (not_films / "readme.txt").write_text("hello\n")
    empty = folder / "empty"
    empty.mkdir()
    labelled = folder / "labelled" / "System A"
    labelled.mkdir(parents=True)
    (labelled / "1.png").write_bytes(make_xray(2))
    missing_column = folder / "missing-column.csv"
    missing_column.write_text("manufacturer,images\nAcme,film.png\n")
    missing_image = folder / "missing-image.csv"
    missing_image.write_text("manufacturer,system,images\nAcme,One,nowhere.png\n")
    not_an_image = folder / "not-an-image.csv"
    not_an_image.write_text("manufacturer,system,images\nAcme,One,notes.txt\n")
    good = folder / "catalog.csv"
    good.write_text("manufacturer,system,images\nAcme,One,film.png\n")
    other_architecture = folder / "other.pt"
    other_architecture.write_bytes(b"weights")
    (folder / "other.pt.json").write_text('{"kind": "raiox-shape", "config": {"widths": [8, 16, 32, 64], '
                                          '"embed_dim": 64}}')
    yield {"text": text, "film": film, "not_films": not_films.parent, "empty": empty, "labelled": labelled.parent,
           "missing_column": missing_column, "missing_image": missing_image, "not_an_image": not_an_image,
           "good": good, "other_architecture": other_architecture, "folder": folder}


class NotAWebhook(BaseHTTPRequestHandler):
    """What a wrong URL on a web server answers: 404 with an HTML page."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<!doctype html><title>404 Not Found</title><h1>Not Found</h1>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def bad_input_cases(inputs: dict[str, Path], taken_port: int, closed_port: int,
                    html_port: int) -> list[tuple[list[str], str]]:
    """(arguments, words the answer must contain): input refused before the database or the encoder starts."""
    i = {name: str(path) for name, path in inputs.items()}
    return [
        (["batch-test", i["empty"]], "no JPEG, PNG, TIFF or DICOM"),
        (["batch-test", i["labelled"], "--url", "ftp://example.org/webhook"], "not an http"),
        (["bench", "embed", "--model-batch-sizes", "8,zero"], "whole numbers"),
        (["bench", "identify", "--films", "0"], "not in the range"),
        (["bench", "intake", "--scenarios", "isolated,nope"], "unknown scenario nope"),
        (["bench", "match", "--sizes", "0"], "1 or more"),
        (["bench", "pipeline", "--submissions", "0"], "not in the range"),
        (["bench", "webhook", "--requests", "0"], "not in the range"),
        (["case", "erase", "7", "--by", "dpo"], "--yes"),
        (["case", "rematch", "0"], "not in the range"),
        (["catalog", "add-spec", "--manufacturer", "M", "--system", "S", "--pitch", "0.8", "--diameters", "x",
          "--lengths", "10"], "diameters_mm"),
        (["catalog", "import", i["text"]], ".csv or .jsonl"),
        (["catalog", "import-specs", i["text"]], ".csv or .jsonl"),
        (["catalog", "import", i["missing_column"]], "line 2"),
        (["catalog", "import", i["missing_image"]], "cannot read nowhere.png"),
        (["catalog", "import", i["not_an_image"]], "not a JPEG, PNG, TIFF or DICOM"),
        (["catalog", "list", "--jsn"], "no such option"),
        (["catalog", "reembed", "--batch-size", "0"], "not in the range"),
        (["db", "migrate", "extra"], "unexpected extra argument"),
        (["db", "status", "--jsn"], "no such option"),
        (["demo", "--cases", "0"], "not in the range"),
        (["deploy", "build", "--out", i["text"]], "is a file"),
        (["deploy", "check", "--env", i["folder"] + "/absent.env"], "not found"),
        (["deploy", "smoke", "--env", i["folder"] + "/absent.env", "--functions-url", "https://example.org/raiox"],
         "not found"),
        (["dev", "--port", "70000"], "not in the range"),
        (["dev", "--port", str(taken_port)], "is in use"),
        (["eval", "--rendered", "nope"], "unknown rendered systems"),
        (["eval", "--folder", i["empty"]], "<system>/<film>"),
        (["eval", "--folder", i["not_films"]], "not a JPEG, PNG, TIFF or DICOM"),
        (["match", i["text"]], "not a JPEG, PNG, TIFF or DICOM"),
        (["reconcile", "--since", "yesterday"], "does not match the formats"),
        (["render-cache", i["folder"] + "/cache", "--systems", "1"], "not in the range"),
        (["render-films", i["folder"] + "/out", "--rendered", "nope"], "unknown rendered systems"),
        (["reviewer", "add", "ana"], "--password-stdin"),
        (["reviewer", "disable"], "missing argument"),
        (["reviewer", "list", "extra"], "unexpected extra argument"),
        (["simulate-webhook", i["film"], "--url", "127.0.0.1:8080/webhook"], "not an http"),
        (["simulate-webhook", i["film"], "--url", f"http://127.0.0.1:{closed_port}/api/v1/web/raiox/webhook"],
         "cannot reach the webhook"),
        (["simulate-webhook", i["film"], "--url", f"http://127.0.0.1:{html_port}/webhook"],
         "/api/v1/web/raiox/webhook"),
        (["status", "--jsn"], "no such option"),
        (["train", "--out", i["folder"] + "/m.pt", "--folder", i["empty"]], "<system>/<film>"),
        (["train", "--out", i["folder"] + "/m.pt", "--cache", i["folder"] + "/absent"], "does not exist"),
        (["train", "--out", i["folder"] + "/m.pt", "--cache", i["folder"], "--pretrained", i["text"]],
         "not a shape encoder checkpoint"),
        (["train", "--out", i["folder"] + "/m.pt", "--cache", i["folder"], "--pretrained",
          i["other_architecture"]], "another architecture than --config raiox-shape-s"),
        (["train", "--out", i["folder"] + "/m.pt", "--average", i["text"]], "not a shape encoder checkpoint"),
        (["train", "--out", i["folder"] + "/m.pt", "--average", i["other_architecture"], "--average",
          str(REPO / "lib/raiox/shape/weights/shape-encoder.pt")], "different architectures"),
        (["worker", "--poll", "-1"], "not in the range"),
    ]


def test_bad_input_is_refused_in_words_before_anything_heavy_starts(
        cli: Cli, inputs: dict[str, Path], tmp_path: Path) -> None:
    limit = _startup(cli, tmp_path / "help-home", PARALLEL) + OWN_WORK_SECONDS
    html = ThreadingHTTPServer(("127.0.0.1", 0), NotAWebhook)
    threading.Thread(target=html.serve_forever, daemon=True).start()
    with socket.socket() as taken, html:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cases = bad_input_cases(inputs, taken.getsockname()[1], free_port(), html.server_address[1])
        assert {_command_of(args) for args, _ in cases} == _leaf_commands(), "a documented command has no case"
        homes = [tmp_path / f"home-{number}" for number in range(len(cases))]
        with ThreadPoolExecutor(PARALLEL) as pool:
            runs = list(pool.map(lambda case, home: cli(*case[0], home=home), cases, homes))
        html.shutdown()
    for (_, expect), home, run in zip(cases, homes, runs, strict=True):
        check_answer(run, expect=expect, limit=limit)
        assert not (home / "pg").exists(), f"the embedded database was started: {run.describe()}"


def test_an_empty_home_answers_every_database_command(
        cli: Cli, inputs: dict[str, Path], tmp_path: Path, startup_seconds: float) -> None:
    """On a new RAIOX_HOME the embedded database is created and migrated by the first command that needs it, as
    `raiox dev` does; commands that have nothing to work on yet say so, in words, before the encoder loads."""
    limit = startup_seconds + OWN_WORK_SECONDS
    home = tmp_path / "home"
    first = cli("status", home=home)
    check_answer(first, expect="creating the embedded database", code=0, limit=limit)
    assert "migration(s) applied" in first.output and "needs attention 0" in first.output
    for args, expect, code in [
        (["catalog", "list"], "the catalog is empty", 0),
        (["reviewer", "list"], "", 0),
        (["db", "status"], "pending:    none", 0),
        (["db", "migrate"], "up to date (0 migration(s) applied now)", 0),
        (["reviewer", "disable", "nobody"], "there is no reviewer nobody", 1),
        (["case", "erase", "1", "--by", "dpo", "--yes"], "no case 1", 1),
        (["case", "rematch"], "the catalog is empty", 1),
        (["match", str(inputs["film"])], "the catalog is empty", 1),
        (["eval", "--folder", str(inputs["labelled"])], "the catalog is empty", 1),
        (["batch-test", str(inputs["labelled"])], "the catalog is empty", 1),
        (["reconcile"], "JOTFORM_API_KEY", 1),
    ]:
        run = cli(*args, home=home)
        assert "Traceback" not in run.output and run.code == code, run.describe()
        assert expect in run.output, run.describe()
        assert run.heavy == {"torch": False, "open_clip": False}, run.describe()
        if run.output:
            assert run.first_line_seconds is not None and run.first_line_seconds <= limit, run.describe()
    added = cli("reviewer", "add", "ana", "--password-stdin", home=home, stdin=b"a long enough password\n")
    assert added.code == 0 and "reviewer ana added" in added.output, added.describe()
    assert "ana" in cli("reviewer", "list", home=home).output


def test_a_configured_database_without_migrations_says_run_db_migrate(
        cli: Cli, inputs: dict[str, Path], tmp_path: Path, empty_db_url: str, startup_seconds: float) -> None:
    """DATABASE_URL names a database nobody migrated: every command that needs it says, in one line and at
    once, to run `raiox db migrate`; before, the pool waited 10 s and printed warnings and a traceback."""
    limit = startup_seconds + OWN_WORK_SECONDS
    home = tmp_path / "home"
    for args in (["status"], ["catalog", "list"], ["reviewer", "list"], ["match", str(inputs["film"])],
                 ["catalog", "import", str(inputs["good"])], ["case", "erase", "1", "--by", "dpo", "--yes"]):
        run = cli(*args, home=home, DATABASE_URL=empty_db_url)
        check_answer(run, expect="run `raiox db migrate`", code=1, limit=limit)
        assert len([line for line in run.output.splitlines() if line.strip()]) == 1, run.describe()
    added = cli("reviewer", "add", "ana", "--password-stdin", home=home, stdin=b"a long enough password\n",
                DATABASE_URL=empty_db_url)
    check_answer(added, expect="run `raiox db migrate`", code=1, limit=limit)
    migrated = cli("db", "migrate", home=home, DATABASE_URL=empty_db_url)
    assert migrated.code == 0 and "applied 0001_initial" in migrated.output, migrated.describe()
    assert cli("status", home=home, DATABASE_URL=empty_db_url).code == 0
    assert not (home / "pg").exists()


def test_an_unreachable_database_is_one_line(cli: Cli, tmp_path: Path, startup_seconds: float) -> None:
    limit = startup_seconds + OWN_WORK_SECONDS
    url = f"postgresql://raiox:secret-password@127.0.0.1:{free_port()}/raiox"
    for args in (["status"], ["db", "migrate"], ["db", "status"]):
        run = cli(*args, home=tmp_path / "home", DATABASE_URL=url)
        check_answer(run, expect="connect", code=1, limit=limit)
        assert "secret-password" not in run.output, run.describe()
