"""The ``samkit`` command line, in process: parsers, error mapping (one line, the fix, exit
code), ``models`` commands with ``--format json``, ``segment --format json``, sub-app loading."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest

pytest.importorskip("typer")

from samkit.cli import common  # noqa: E402
from samkit.cli.main import build_app, main, optional_module  # noqa: E402
from samkit.errors import InputError  # noqa: E402
from samkit.specs import MODELS  # noqa: E402


pytestmark = pytest.mark.usefixtures("empty_cache")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """A small picture: a bright square on a dark textured background (100 x 80)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img = np.clip(40 + rng.normal(0, 10, (80, 100, 3)), 0, 255).astype(np.uint8)
    img[20:60, 30:70] = [230, 200, 60]
    path = tmp_path_factory.mktemp("img") / "square.png"
    Image.fromarray(img).save(path)
    return path


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- parsers
@pytest.mark.parametrize("text,expected", [
    ("10,20", (10.0, 20.0, 1)), ("10.5, 20", (10.5, 20.0, 1)), ("3,4,0", (3.0, 4.0, 0)), ("3,4,1", (3.0, 4.0, 1)),
])
def test_parse_point(text, expected):
    assert common.parse_point(text) == expected


@pytest.mark.parametrize("text", ["10", "10;20", "a,b", "1,2,3,4", "1,2,2", "nan,1", "1,2,-1"])
def test_parse_point_rejects(text):
    with pytest.raises(InputError, match="Fix:"):
        common.parse_point(text)


@pytest.mark.parametrize("text,ok", [("1,2,30,40", True), ("30,2,1,40", False), ("1,2,3", False),
                                     ("1,40,30,2", False), ("x,2,3,4", False)])
def test_parse_box(text, ok):
    if ok:
        assert common.parse_box(text) == (1.0, 2.0, 30.0, 40.0)
    else:
        with pytest.raises(InputError, match="Fix:"):
            common.parse_box(text)


def test_parse_formats():
    F = common.Format
    assert common.parse_formats(None) == [F.png]
    assert common.parse_formats(["png,coco", "coco", "JSON"]) == [F.png, F.coco, F.json]
    with pytest.raises(InputError, match="labelme"):
        common.parse_formats(["tiff"])


# ----------------------------------------------------------------------------- errors
ERROR_CASES = [
    # (args after the image, expected exit code, words the one-line message must hold)
    (["--point", "10;20"], 2, ["point", "Fix:"]),
    (["--point", "10,20,7"], 2, ["label", "Fix:"]),
    (["--box", "60,60,10,10"], 2, ["inverted", "Fix:"]),
    ([], 2, ["no prompt", "--point"]),
    (["--point", "10,10", "--model", "sam_vit_q"], 2, ["unknown model", "samkit models ls"]),
    (["--point", "10,10", "--format", "tiff"], 2, ["format", "Fix:"]),
    (["--point", "5000,10"], 2, ["outside", "Fix:"]),
    (["--point", "10,10", "--checkpoint", "x.pth"], 2, ["--model", "Fix:"]),
    (["--point", "10,10", "--model", "sam_vit_b"], 4, ["not in the cache", "Fix:"]),
]


@pytest.mark.parametrize("extra,code,words", ERROR_CASES)
def test_segment_errors_print_the_fix(capsys, example, tmp_path, extra, code, words):
    rc, out, err = run_cli(capsys, "segment", example, "--out", tmp_path / "o", *extra)
    assert rc == code, err
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(line) == 1, err
    for w in words:
        assert w in line[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_missing_image_is_an_input_error(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "segment", tmp_path / "nope.jpg", "--point", "1,1")
    assert rc == 2 and "error:" in err and "Fix" in err and "Traceback" not in err


def test_bad_checkpoint_file_exits_3(capsys, example, tmp_path):
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"this is not a checkpoint")
    rc, _, err = run_cli(capsys, "segment", example, "--point", "10,10", "--model", "sam_vit_b",
                         "--checkpoint", bad, "--out", tmp_path / "o")
    assert rc == 3, err
    assert err.strip().splitlines()[-1].startswith("error: ") and "Fix" in err


@pytest.mark.parametrize("exc,code", [
    (InputError("x. Fix: y"), 2), (KeyError("unknown model 'a'"), 2), (FileNotFoundError(2, "No such file", "f"), 2),
])
def test_error_codes(exc, code):
    assert common.error_exit_code(exc) == code
    assert "Fix" in common.error_message(exc)


def test_bugs_keep_their_traceback():
    assert common.error_exit_code(ZeroDivisionError()) is None


# ----------------------------------------------------------------------------- models
def test_models_ls_json(capsys, empty_cache):
    rc, out, _ = run_cli(capsys, "models", "ls", "--format", "json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["default"] == "classic" and doc["cache_dir"] == str(empty_cache)
    names = [m["name"] for m in doc["models"]]
    assert names == list(MODELS)
    by = {m["name"]: m for m in doc["models"]}
    assert by["classic"]["cached"] is None and by["classic"]["default"] is True
    assert by["sam_vit_b"]["cached"] is False and by["sam_vit_b"]["input_size"] == 1024
    assert by["edge_sam"]["commercial_use"] is False


def test_default_model_is_first_cached_neural(capsys, empty_cache):
    empty_cache.mkdir(parents=True)
    (empty_cache / MODELS["edge_sam"].filename).write_bytes(b"weights")
    (empty_cache / MODELS["sam2_hiera_t"].filename).write_bytes(b"weights")
    assert common.default_model()[0] == "edge_sam"  # edge_sam comes before sam2 in specs order
    rc, out, _ = run_cli(capsys, "models", "ls", "--format", "json")
    doc = json.loads(out)
    assert doc["default"] == "edge_sam"
    assert {m["name"] for m in doc["models"] if m["cached"]} == {"edge_sam", "sam2_hiera_t"}


def test_models_ls_table(capsys):
    rc, out, _ = run_cli(capsys, "models", "ls")
    assert rc == 0 and "sam_vit_b" in out and "default: classic" in out


def test_models_ls_never_cuts_a_name(capsys, monkeypatch):
    """In an 80-column terminal (or a pipe) the table keeps its minimum width and wraps the licence
    text: every model name stays whole (it is what the user types), and so do the digests."""
    from samkit.specs import list_models

    monkeypatch.setenv("COLUMNS", "80")
    rc, out, _ = run_cli(capsys, "models", "ls")
    assert rc == 0
    cells = {c.strip() for line in out.splitlines() for c in line.split("│")}
    missing = [name for name in list_models() if name not in cells]
    assert missing == [] and "git-blob" in cells and "sha256" in cells


def test_models_info_json(capsys, empty_cache):
    rc, out, _ = run_cli(capsys, "models", "info", "edge_sam", "--format", "json")
    assert rc == 0
    info = json.loads(out)
    assert "non-commercial" in info["license"] and info["commercial_use"] is False
    assert info["input_size"] == 1024 and info["url"].startswith("https://")
    assert info["cache_path"] == str(empty_cache / "edge_sam.pth") and "EdgeSAM" in info["paper"]


def test_models_info_table_names_licence_and_path(capsys, empty_cache):
    rc, out, _ = run_cli(capsys, "models", "info", "edge_sam")
    assert rc == 0 and "NON-COMMERCIAL" in out and str(empty_cache / "edge_sam.pth") in out.replace("\n", "")


@pytest.mark.parametrize("verb", ["info", "download", "verify"])
def test_models_unknown_name(capsys, verb):
    rc, _, err = run_cli(capsys, "models", verb, "sam_vit_z")
    assert rc == 2 and "unknown model" in err and "sam_vit_b" in err


def test_models_download_offline_says_where_to_put_the_file(capsys, empty_cache):
    rc, _, err = run_cli(capsys, "models", "download", "mobile_sam")
    assert rc == 4 and str(empty_cache / "mobile_sam.pt") in err and "Fix" in err


def test_models_download_classic_needs_nothing(capsys):
    rc, out, _ = run_cli(capsys, "models", "download", "classic", "--format", "json")
    assert rc == 0 and json.loads(out)["path"] is None


def test_models_verify(capsys, empty_cache, tmp_path, monkeypatch):
    rc, _, err = run_cli(capsys, "models", "verify", "sam_vit_b")
    assert rc == 4 and "samkit models download sam_vit_b" in err
    wrong = tmp_path / "sam.pth"
    wrong.write_bytes(b"not the official file")
    rc, _, err = run_cli(capsys, "models", "verify", "sam_vit_b", "--path", wrong)
    assert rc == 4 and "01ec64" in err
    import dataclasses
    import hashlib

    good = tmp_path / "good.pth"
    good.write_bytes(b"pretend official weights")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    monkeypatch.setitem(MODELS, "sam_vit_b", dataclasses.replace(MODELS["sam_vit_b"], sha256=digest, sha256_prefix=None, extra={}))
    rc, out, err = run_cli(capsys, "models", "verify", "sam_vit_b", "--path", good, "--format", "json")
    assert rc == 0, err
    assert json.loads(out)["verified"] is True


# ----------------------------------------------------------------------------- segment
def test_segment_json(capsys, example, tmp_path):
    rc, out, err = run_cli(capsys, "segment", example, "--box", "25,15,75,65", "--format", "json,png",
                           "--out", tmp_path / "o")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["model"] == "classic" and doc["count"] == 3 and doc["prompts"]["box"] == [25, 15, 75, 65]
    scores = [m["score"] for m in doc["masks"]]
    assert scores == sorted(scores, reverse=True)
    assert doc["files"]["png"][0].endswith("square_000.png")
    x1, y1, x2, y2 = doc["masks"][0]["box"]
    assert abs(x1 - 30) <= 3 and abs(y1 - 20) <= 3 and abs(x2 - 70) <= 3 and abs(y2 - 60) <= 3
    assert "model: classic" in err


def test_segment_single_all_formats(capsys, example, tmp_path):
    out_dir = tmp_path / "o"
    rc, out, err = run_cli(capsys, "segment", example, "--point", "50,40", "--point", "5,5,0", "--single",
                           "--out", out_dir, *sum((["--format", f.value] for f in common.Format if f.value != "json"), []))
    assert rc == 0, err
    assert out == ""  # nothing but JSON ever goes to stdout
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(["square_000.png", "square_index.png", "square_overlay.png", "square_coco.json",
                            "square_polygons.json", "square.txt", "square.json", ".samkit"])
    assert [p.name for p in (out_dir / ".samkit").iterdir()] == ["segment-square.json"]  # the manifest only
    coco = json.loads((out_dir / "square_coco.json").read_text())
    assert len(coco["annotations"]) == 1 and coco["images"][0]["file_name"] == "square.png"
    assert 1200 <= coco["annotations"][0]["area"] <= 2000  # the 40 x 40 square
    labelme = json.loads((out_dir / "square.json").read_text())
    assert labelme["imagePath"] == "../square.png" or labelme["imagePath"].endswith("square.png")
    assert (out_dir / "square.txt").read_text().startswith("0 ")


# ----------------------------------------------------------------------------- app structure
def test_help_lists_groups_and_examples(capsys):
    rc, out, _ = run_cli(capsys, "--help")
    assert rc == 0 and "segment" in out and "models" in out and "Examples" in out
    rc, out, _ = run_cli(capsys, "segment", "--help")
    assert rc == 0 and "--point" in out and "Examples" in out


def test_help_does_not_import_torch():
    code = "import sys; from samkit.cli.main import main; main(['--help']); print('TORCH', 'torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "TORCH False" in res.stdout


def test_optional_module_tolerates_only_its_own_absence(tmp_path, monkeypatch):
    assert optional_module("samkit.cli.no_such_cmd_xyz") is None
    (tmp_path / "samkit_test_broken_cmd.py").write_text("import samkit_no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="samkit_no_such_dependency_xyz"):
        optional_module("samkit_test_broken_cmd")


def test_build_app_registers_existing_groups(capsys, monkeypatch):
    import typer
    from typer.testing import CliRunner

    sub = typer.Typer(help="A group for the test.")

    @sub.command("hello")
    def hello():
        typer.echo("hello from the group")

    @sub.command("bye")
    def bye():
        typer.echo("bye")

    monkeypatch.setitem(sys.modules, "samkit_test_group_cmd", types.SimpleNamespace(app=sub))
    app = build_app([("samkit_test_group_cmd", "greet"), ("samkit.cli.not_there_cmd", "ghost")])
    res = CliRunner().invoke(app, ["greet", "hello"])
    assert res.exit_code == 0 and "hello from the group" in res.output
    res = CliRunner().invoke(app, ["--help"])
    assert "greet" in res.output and "ghost" not in res.output


def test_models_download_from_a_local_server(capsys, empty_cache, monkeypatch):
    """``models download`` end to end against an HTTP server on loopback: progress on stderr,
    JSON on stdout, the file in the cache, then ``models ls`` shows it and ``verify`` passes."""
    import dataclasses
    import hashlib
    import http.server
    import threading

    payload = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256(payload).hexdigest()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server API
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mobile_sam.pt"
        spec = dataclasses.replace(MODELS["mobile_sam"], url=url, sha256=digest, extra={})
        monkeypatch.setitem(MODELS, "mobile_sam", spec)
        monkeypatch.delenv("SAMKIT_OFFLINE")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        rc, out, err = run_cli(capsys, "models", "download", "mobile_sam", "--format", "json")
        assert rc == 0, err
        doc = json.loads(out)
        assert doc["path"] == str(empty_cache / "mobile_sam.pt")
        assert (empty_cache / "mobile_sam.pt").read_bytes() == payload
    finally:
        server.shutdown()
        server.server_close()
    rc, out, _ = run_cli(capsys, "models", "ls", "--format", "json")
    doc = json.loads(out)
    assert doc["default"] == "mobile_sam"
    rc, out, _ = run_cli(capsys, "models", "verify", "mobile_sam", "--format", "json")
    assert rc == 0 and json.loads(out)["verified"] is True


def test_segment_offline_flag_never_downloads(capsys, example, tmp_path, monkeypatch, empty_cache):
    monkeypatch.delenv("SAMKIT_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    rc, _, err = run_cli(capsys, "segment", example, "--point", "10,10", "--model", "sam_vit_b", "--offline",
                         "--out", tmp_path / "o")
    assert rc == 4, err
    assert str(empty_cache / MODELS["sam_vit_b"].filename) in err and "Fix" in err


# ----------------------------------------------------------------------------- --out checked first
def _no_work(monkeypatch):
    """Loading an image, a video or a model fails the test: the --out check must come first."""
    import samkit.cli.eval_cmd as eval_cmd
    import samkit.io.image
    import samkit.io.video
    import samkit.registry

    def forbidden(*a, **k):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(samkit.registry, "load_model", forbidden)
    monkeypatch.setattr(samkit.io.image, "load_image", forbidden)
    monkeypatch.setattr(samkit.io.video, "open_frames", forbidden)
    monkeypatch.setattr(eval_cmd, "build_predictor", forbidden)
    monkeypatch.setattr(eval_cmd, "build_tracker", forbidden)


def _commands(image, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir(exist_ok=True)
    anns = tmp_path / "instances.json"
    anns.write_text("{}")
    return {
        "segment": ["segment", image, "--point", "10,10"],
        "everything": ["everything", image, "--model", "sam_vit_b"],
        "everything-run": ["everything", "run", image, "--model", "sam_vit_b"],  # the older spelling
        "track": ["track", frames, "--point", "0,10,10,1", "--model", "classic"],
        "eval-interactive": ["eval", "interactive", "--data", tmp_path, "--model", "classic"],
        "eval-vos": ["eval", "vos", "--data", tmp_path, "--model", "classic"],
        "eval-coco": ["eval", "coco", "--annotations", anns, "--images", tmp_path, "--model", "classic"],
        "eval-davis-results": ["eval", "davis-results", "--data", tmp_path, "--results", tmp_path],
    }


@pytest.mark.parametrize("below", [False, True], ids=["file", "file-sub"])
@pytest.mark.parametrize("command", ["segment", "everything", "everything-run", "track", "eval-interactive",
                                     "eval-vos", "eval-coco", "eval-davis-results"])
def test_out_that_is_a_file_fails_before_any_work(capsys, example, tmp_path, monkeypatch, command, below):
    _no_work(monkeypatch)
    blocker = tmp_path / "taken.txt"
    blocker.write_text("my notes")
    out = blocker / "sub" if below else blocker
    rc, stdout, err = run_cli(capsys, *_commands(example, tmp_path)[command], "--out", out)
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "is a file" in lines[0] and str(blocker) in lines[0] and "Fix:" in lines[0]
    assert blocker.read_text() == "my notes"


def test_check_out_dir(tmp_path):
    assert common.check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "f").write_text("x")
    for bad in (tmp_path / "f", tmp_path / "f" / "a" / "b"):
        with pytest.raises(InputError, match="is a file"):
            common.check_out_dir(bad)
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    with pytest.raises(InputError, match="broken"):
        common.check_out_dir(tmp_path / "link")


# ----------------------------------------------------------------------------- score order
def _unsorted_predict(monkeypatch):
    """The predictor answers three masks of different sizes with scores not in order."""
    from samkit.masks import Masks
    from samkit.predict.image import ImagePredictor

    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=True):
        m = np.zeros((3, 80, 100), bool)
        m[0, 10:20, 10:20] = True  # score 0.2
        m[1, 20:60, 30:70] = True  # score 0.9: the best
        m[2, 5:15, 60:90] = True   # score 0.5
        return Masks(m, np.array([0.2, 0.9, 0.5], np.float32))

    monkeypatch.setattr(ImagePredictor, "predict", predict)


def test_segment_sorts_masks_best_first_in_every_output(capsys, example, tmp_path, monkeypatch):
    from PIL import Image

    _unsorted_predict(monkeypatch)
    out_dir = tmp_path / "o"
    rc, out, err = run_cli(capsys, "segment", example, "--point", "50,40", "--out", out_dir,
                           "--format", "png,coco,polygons,json")
    assert rc == 0, err
    assert "scores 0.900, 0.500, 0.200 (best first)" in err
    doc = json.loads(out)
    assert [m["score"] for m in doc["masks"]] == pytest.approx([0.9, 0.5, 0.2])
    best = np.asarray(Image.open(out_dir / "square_000.png")) > 0
    assert best.sum() == 40 * 40 and best[40, 50]
    assert (np.asarray(Image.open(out_dir / "square_002.png")) > 0).sum() == 100
    coco = json.loads((out_dir / "square_coco.json").read_text())
    assert [a["score"] for a in coco["annotations"]] == pytest.approx([0.9, 0.5, 0.2])
    assert coco["annotations"][0]["area"] == 1600
    polys = json.loads((out_dir / "square_polygons.json").read_text())
    assert [m["score"] for m in polys["masks"]] == pytest.approx([0.9, 0.5, 0.2])


def test_help_says_masks_are_sorted(capsys):
    rc, out, _ = run_cli(capsys, "segment", "--help")
    assert rc == 0 and "Masks are sorted by score, best first, in every output" in _flat(out)


# ----------------------------------------------------------------------------- reruns: one set
def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_segment_single_after_multimask_removes_the_stale_masks(capsys, example, tmp_path):
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    (out_dir / "square_notes.txt").write_text("mine")  # not samkit's: stays
    rc, _, err = run_cli(capsys, "segment", example, "--point", "50,40", "--out", out_dir)
    assert rc == 0, err
    assert {"square_000.png", "square_001.png", "square_002.png"} <= set(_files(out_dir))
    rc, _, err = run_cli(capsys, "segment", example, "--point", "50,40", "--out", out_dir, "--single")
    assert rc == 0, err
    assert sorted(_files(out_dir)) == [".samkit/segment-square.json", "square_000.png", "square_index.png",
                                       "square_notes.txt"]


@pytest.mark.parametrize("failure", ["disk-full", "bug", "ctrl-c"])
def test_segment_failing_format_keeps_the_previous_set(capsys, example, tmp_path, monkeypatch, failure):
    import errno

    from samkit.masks import Masks

    out_dir = tmp_path / "o"
    rc, _, err = run_cli(capsys, "segment", example, "--point", "50,40", "--out", out_dir,
                         "--format", "png,coco,yolo,labelme")
    assert rc == 0, err
    before = _files(out_dir)

    def broken(self, path=None, **kw):
        if failure == "disk-full":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        raise KeyboardInterrupt if failure == "ctrl-c" else RuntimeError("a bug in a writer")

    monkeypatch.setattr(Masks, "to_yolo", broken)  # yolo comes after png and coco
    args = ["segment", example, "--box", "25,15,75,65", "--single", "--out", out_dir, "--format", "png,coco,yolo"]
    if failure == "bug":
        with pytest.raises(RuntimeError, match="a bug"):
            main([str(a) for a in args])
        err = capsys.readouterr().err
    else:
        rc, _, err = run_cli(capsys, *args)
        assert rc != 0, err  # 1 for the error, 130 (or 1 with older click) for Ctrl-C
    assert _files(out_dir) == before  # same names, same bytes: nothing half-replaced, no temp file
    assert sorted(p.name for p in (out_dir / ".samkit").iterdir()) == ["segment-square.json"]
    if failure == "disk-full":
        line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert len(line) == 1 and "No space left" in line[0] and "Fix:" in line[0]
        assert ".samkit" not in line[0] and ".tmp" not in line[0] and "/tmp-" not in line[0]


def test_segment_failure_in_a_new_folder_leaves_no_folder(capsys, example, tmp_path, monkeypatch):
    from samkit.masks import Masks

    monkeypatch.setattr(Masks, "to_yolo", lambda self, path=None, **kw: (_ for _ in ()).throw(OSError(28, "full")))
    out_dir = tmp_path / "new" / "o"
    rc, _, err = run_cli(capsys, "segment", example, "--point", "50,40", "--out", out_dir, "--format", "png,yolo")
    assert rc == 1, err
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- one --format option
def _flat(help_text: str) -> str:
    """Help text as one line of words (rich's table borders removed)."""
    import re

    return " ".join(re.sub(r"[\u2500-\u257f]", " ", help_text).split())


def test_every_command_reads_formats_the_same_way(capsys):
    for command in ("segment", "everything", "track"):
        rc, out, _ = run_cli(capsys, command, "--help")
        assert rc == 0 and "Output format, repeatable or comma-separated:" in _flat(out), command


@pytest.mark.parametrize("command,usage", [("segment", "IMAGE"), ("everything", "IMAGE"), ("track", "VIDEO")])
def test_usage_lines_name_the_argument(capsys, command, usage):
    rc, out, _ = run_cli(capsys, command, "--help")
    assert rc == 0
    assert f"Usage: samkit {command} [OPTIONS] {usage}" in out
    assert "COMMAND [ARGS]" not in out and "{" not in out.split("Usage:")[1].splitlines()[0]


def test_backend_help_shows_the_extra(capsys):
    rc, out, _ = run_cli(capsys, "segment", "--help")
    assert "samkit[onnx]" in _flat(out)  # rich markup must not eat "[onnx]"
