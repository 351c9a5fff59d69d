"""DATA as a URL: a real HTTP server on 127.0.0.1 and fsspec's real memory filesystem, read through the
local mirror (lanner.data.remote) by the same readers as folders on disk."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import pytest
import yaml
from helpers import write_digit_folders

from lanner import api, cli
from lanner.data.formats import read_dataset, write_dataset
from lanner.data.records import Dataset
from lanner.data.remote import local_dataset
from lanner.errors import DataError

SRC = Path(cli.__file__).resolve().parents[1]
TINY = [
    "--model",
    "test_resnet",
    "--image-size",
    "16",
    "--batch-size",
    "4",
    "--no-hflip",
    "--augment",
    "light",
]


class _Counted(SimpleHTTPRequestHandler):
    """Serves a folder (index pages included) and counts the requests it answers."""

    requests: list[str]
    pages: dict[str, str] = {}  # path -> HTML served instead of the folder (a hostile index page)

    def do_GET(self):
        if self.path in self.pages:
            body = self.pages[self.path].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format, *args):
        self.requests.append(self.requestline)


@pytest.fixture
def server(tmp_path):
    """(base URL, served folder, requests answered so far)."""
    root, requests = tmp_path / "served", []
    root.mkdir()
    handler = type("Handler", (_Counted,), {"requests": requests, "pages": {}})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests, handler.pages
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LANNER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def lanner(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "LANNER_CACHE": str(cwd / "cache"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "lanner", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=900
    )


def test_train_eval_and_predict_from_an_http_url_fetch_the_data_once(server, tmp_path, cache, capsys):
    base, root, requests, _ = server
    write_digit_folders(root / "digits", labels=(0, 1), per_class=6)
    url, run = f"{base}/digits/", tmp_path / "run"
    done = lanner("train", url, "--run", str(run), "--epochs", "1", "--no-eval", *TINY, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"fetched 12 files of {base}/digits" in done.stderr
    fetched = len(requests)
    assert sum("GET /digits/digit0/" in r for r in requests) == 6 + 1  # 6 images + the folder's index
    assert yaml.safe_load((run / "config.yaml").read_text())["data"] == url  # eval and resume find it again

    assert cli.run_cli(["eval", str(run), "--no-report"]) == 0  # in this process: one torch import less
    assert json.loads((run / "metrics.json").read_text())["num_images"] == 2  # the run's own val split
    assert "as fetched into" in capsys.readouterr().err and len(requests) == fetched  # the mirror, no server
    assert api.check(url)["num_images"] == 12 and len(requests) == fetched  # in this process too (cache)

    rows = api.predict(run, [f"{url}digit1/000.png"])
    assert len(rows) == 1 and not rows[0].get("error") and len(requests) > fetched


def test_a_missing_or_unreachable_url_is_a_usage_error_naming_it(server, cache, capsys):
    base, _, _, _ = server
    for url, problem in ((f"{base}/nowhere/", "not found"), ("http://127.0.0.1:9/x/", "cannot read it")):
        assert cli.run_cli(["check", url]) == 2
        out = capsys.readouterr().out
        assert url in out and problem in out and "Traceback" not in out, out


def test_a_scheme_without_its_package_says_what_to_install(cache, capsys):
    from fsspec.registry import known_implementations

    missing = next(
        (p, spec["class"].split(".")[0])
        for p, spec in sorted(known_implementations.items())
        if spec["class"].split(".")[0] not in ("fsspec", "pyarrow") and _absent(spec["class"].split(".")[0])
    )
    assert cli.run_cli(["check", f"{missing[0]}://bucket/data/"]) == 2
    out = capsys.readouterr().out
    assert f"pip install {missing[1]}" in out, out
    assert cli.run_cli(["check", "nosuchscheme://bucket/data/"]) == 2
    assert "Protocol not known" in capsys.readouterr().out


def _absent(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is None


def test_an_index_page_linking_outside_the_url_is_refused(server, cache):
    base, root, _, pages = server
    (root / "secret.txt").write_text("not part of the dataset")
    pages["/evil/"] = '<a href="a.png">a.png</a> <a href="sub/../../secret.txt">x</a>'
    with pytest.raises(DataError, match=r"sub/\.\./\.\./secret\.txt.*refused"):
        read_dataset(f"{base}/evil/")
    assert not list(cache.rglob("secret.txt"))


# ------------------------------------------------------------------------------------- memory://
@pytest.fixture(scope="module")
def coco_in_memory(shared_data, tmp_path_factory) -> str:
    """A COCO JSON (_annotations.coco.json) beside its images on fsspec's memory filesystem: 6 images
    of rbc_roboflow_coco, no split (training draws one)."""
    full = read_dataset(shared_data / "rbc_roboflow_coco")
    picked = [r for r in full.records if r.split == "train"][:6]
    for record in picked:
        record.split = None
    local = tmp_path_factory.mktemp("coco") / "rbc"
    write_dataset(Dataset(full.classes, picked, "detect", format="coco"), "coco", local)
    memory = fsspec.filesystem("memory")
    memory.put(str(local), "/lanner-test/rbc", recursive=True)
    return "memory://lanner-test/rbc"


def test_check_and_train_a_coco_dataset_on_the_memory_filesystem(coco_in_memory, tmp_path, cache):
    memory = fsspec.filesystem("memory")
    annotations = next(p for p in memory.find("/lanner-test/rbc") if p.endswith(".json"))
    summary = api.check(f"memory://{annotations}")  # a file: its images beside it come along
    assert summary["format"] == "coco" and summary["num_images"] == 6 and summary["num_issues"] == 0
    mirror = next(cache.glob("remote/*/source.json"))
    fetched = json.loads(mirror.read_text())["fetched"]
    run = api.train(
        coco_in_memory, run=str(tmp_path / "run"), epochs=1, model="fcos_test_resnet", image_size=64,
        batch_size=2, augment="light", evaluate_after=False,
    )  # fmt: skip
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert json.loads(mirror.read_text())["fetched"] == fetched  # the folder is the file's mirror: reused


def test_a_dotdot_file_name_in_remote_annotations_is_refused(coco_in_memory, cache):
    memory = fsspec.filesystem("memory")
    annotations = next(p for p in memory.find("/lanner-test/rbc") if p.endswith(".json"))
    coco = json.loads(memory.cat(annotations))
    image = next(p for p in memory.find("/lanner-test/rbc") if p.endswith((".jpg", ".png")))
    memory.pipe("/lanner-test/secret.jpg", memory.cat(image))  # exists remotely, outside the dataset
    coco["images"][0]["file_name"] = "../secret.jpg"  # never fetched: not under the dataset's URL
    coco["images"][1]["file_name"] = "../source.json"  # exists locally, beside the mirror's data/
    memory.pipe("/lanner-test/evil/annotations.json", json.dumps(coco).encode())
    for path in memory.find("/lanner-test/rbc"):
        if path != annotations:
            memory.pipe(path.replace("/rbc/", "/evil/", 1), memory.cat(path))
    dataset = read_dataset("memory://lanner-test/evil/annotations.json")
    problems = {Path(i.path.split(" (image ")[-1].rstrip(")")).name: i.problem for i in dataset.issues}
    assert len(dataset.records) == 4 and "outside the dataset root" in problems["source.json"], problems
    assert "not found" in problems["secret.jpg"] and not list(cache.rglob("secret.jpg"))
    with pytest.raises(DataError, match="source.json resolves outside the dataset root"):
        read_dataset("memory://lanner-test/evil/annotations.json", strict=True)


def test_a_mirror_is_reused_until_it_lacks_the_file_asked_for(cache):
    memory = fsspec.filesystem("memory")
    memory.pipe("/lanner-test/files/labels.csv", b"first")
    labels = local_dataset("memory://lanner-test/files/labels.csv")
    assert labels.read_bytes() == b"first" and (labels.parent.parent / "source.json").is_file()
    memory.pipe("/lanner-test/files/labels.csv", b"changed")
    memory.pipe("/lanner-test/files/more.csv", b"new")
    assert local_dataset("memory://lanner-test/files/labels.csv").read_bytes() == b"first"  # reused
    more = local_dataset("memory://lanner-test/files/more.csv")  # not in the mirror: all fetched again
    assert more.parent == labels.parent and more.read_bytes() == b"new" and labels.read_bytes() == b"changed"
    assert not list(cache.glob("remote/.*"))  # no temp or set-aside folder left behind
