"""``samkit models ls | info NAME | download NAME | verify NAME``: the registry and the weights cache.

Only ``samkit.specs`` and ``samkit.hub`` (standard library) are used: no torch import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .common import Output, default_model, emit_json, info, typer

app = typer.Typer(
    help="List models, show their facts, download and verify their weights.",
    no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
    epilog="[bold]Examples[/bold]\n\n  samkit models ls\n\n  samkit models info edge_sam\n\n"
           "  samkit models download sam_vit_b\n\n  samkit models verify sam_vit_b\n\n"
           "  samkit models ls --format json\n\n"
           "Offline machines: copy the weights file to the cache path that `samkit models info NAME` prints "
           "(the cache is $SAMKIT_HOME, else ~/.cache/samkit).",
)

FORMAT_OPT = typer.Option(Output.table, "--format", "-f", help="table (human) or json (machine-readable, stdout).")


def model_record(name: str) -> dict:
    """Facts of one model plus the state of its weights in the cache (JSON-ready)."""
    from .. import hub
    from ..specs import get_spec

    spec = get_spec(name)
    cached = hub.cached_path(spec)
    return {
        "name": spec.name, "family": spec.family, "kind": spec.kind, "neural": spec.neural, "video": spec.video,
        "input_size": spec.input_size if spec.neural else None, "license": spec.license,
        "commercial_use": spec.commercial_use, "paper": spec.paper, "url": spec.url, "filename": spec.filename,
        "cache_path": str(hub.target_path(spec)) if spec.filename else None,
        "cached": cached is not None if spec.filename else None,
        "digest": hub.digest_kind(spec), "size": spec.extra.get("size"),
        "sha256": spec.sha256, "sha256_prefix": spec.sha256_prefix, "md5": spec.extra.get("md5"),
        "md5_prefix": spec.extra.get("md5_prefix"), "git_blob_sha1": spec.extra.get("git_blob_sha1"),
        "digest_source": spec.digest_source or None, "tag": spec.tag,
        "aliases": list(spec.aliases), "notes": spec.notes,
    }


@app.command("ls")
def ls(fmt: Output = FORMAT_OPT,
       family: Optional[str] = typer.Option(None, "--family", help="Only this family (sam, sam2, edge_sam, ...).")) -> None:
    """List every model, whether its weights are in the cache, how they are verified, and the default
    (one table per kind: segmenters, then CLIP models)."""
    from .. import hub
    from ..specs import MODELS

    default, why = default_model()
    rows = [model_record(n) for n, s in MODELS.items() if family is None or s.family == family]
    if family is not None and not rows:
        from ..errors import InputError

        families = sorted({s.family for s in MODELS.values()})
        raise InputError(f"no model of family {family!r}. Fix: use one of {', '.join(families)}.")
    for r in rows:
        r["default"] = r["name"] == default
    if fmt is Output.json:
        emit_json({"cache_dir": str(hub.cache_dir()), "default": default, "default_reason": why, "models": rows})
        return
    from rich.console import Console

    console = Console()
    console.width = max(console.width, LS_MIN_WIDTH)  # below it the table cuts names and digests
    kinds = list(dict.fromkeys(r["kind"] for r in rows))  # segmenters first (specs order), then CLIP
    for kind in kinds:
        title = (f"samkit models (cache: {hub.cache_dir()})" if kind == "segmenter" else
                 f"kind '{kind}': names masks, finds them from text; never the default")
        console.print(_table(title, [r for r in rows if r["kind"] == kind]))
    console.print(f"default: [bold]{default}[/bold] ({why})", soft_wrap=True)


LS_MIN_WIDTH = 132  # columns `models ls` draws its table in at least (longer lines wrap in a narrow terminal)


def _table(title: str, rows: list):
    """One rich table of ``model_record`` rows."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("name", no_wrap=True)  # the name is what users type: never cut, the others wrap
    for col in ("family", "input", "licence", "weights", "digest", "default"):
        table.add_column(col)
    for r in rows:
        if r["cached"] is None:
            weights = "none needed"
        else:
            weights = "[green]present[/green]" if r["cached"] else "[dim]missing[/dim]"
        licence = r["license"] if r["commercial_use"] else f"[yellow]{r['license']}[/yellow]"
        digest = r["digest"] if r["digest"] not in ("size-only", "none") else f"[yellow]{r['digest']}[/yellow]"
        table.add_row(r["name"], r["family"], str(r["input_size"] or "-"), licence, weights, digest,
                      "[bold]*[/bold]" if r["default"] else "")
    return table


@app.command("info")
def info_cmd(name: str = typer.Argument(..., help="Model name (see `samkit models ls`)."), fmt: Output = FORMAT_OPT) -> None:
    """Show URL, licence, input size, paper and cache path of one model."""
    from ..specs import get_spec

    r = model_record(name)
    if fmt is Output.json:
        emit_json(r)
        return
    from rich.console import Console

    console = Console()
    lines = [("name", r["name"]), ("family", r["family"]), ("kind", r["kind"]),
             ("input size", f"{r['input_size']} x {r['input_size']}" if r["input_size"] else "any (no network)"),
             ("licence", r["license"] + ("" if r["commercial_use"] else "  [yellow](NON-COMMERCIAL use only)[/yellow]")),
             ("paper", r["paper"]), ("url", r["url"] or "-"), ("file", r["filename"] or "-"),
             ("cache path", r["cache_path"] or "-"),
             ("weights", "none needed" if r["cached"] is None else ("present" if r["cached"] else "missing")),
             ("digest", _digest_line(get_spec(name)) if r["filename"] else "-"),
             ("size", f"{r['size']} bytes" if r["size"] else "-"),
             ("source", r["digest_source"] or "-"),
             ("video", "yes" if r["video"] else "no")]
    if r["notes"]:
        lines.append(("notes", r["notes"]))
    for key, value in lines:
        console.print(f"[bold]{key:<11}[/bold] {value}", soft_wrap=True, highlight=False)
    if r["cached"] is False:
        console.print(f"\nGet the weights: `samkit models download {r['name']}`, or offline copy {r['url']} "
                      f"to {r['cache_path']}.", soft_wrap=True, highlight=False)


def _fetch(spec, fmt: Output):
    """Download one file of the registry into the cache (or find it there) -> (path, verified:
    True / False / None when it was already cached and not hashed again)."""
    from .. import hub

    already = hub.cached_path(spec)
    if already is not None:
        info(f"{spec.name}: already in the cache at {already} (`samkit models verify {spec.name}` checks it)")
        return already, None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    # the bar goes to stderr: stdout stays clean for --format json
    with Progress(TextColumn(spec.filename), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=fmt is Output.json) as bar:
        task = bar.add_task("download", total=None)

        def progress(done: int, total: Optional[int]) -> None:
            bar.update(task, completed=done, total=total)

        path = hub.resolve(spec, progress=progress)
    verified = hub.digest_kind(spec) in _FULL
    if verified:
        info(f"{spec.name}: saved to {path} ({hub.digest_kind(spec)} verified)")
    else:
        info(f"{spec.name}: saved to {path}, but it could not be verified: upstream publishes no "
             f"full digest of {spec.filename} (checked: {', '.join(_digest_names(spec))}).")
    return path, verified


@app.command("download")
def download(name: str = typer.Argument(..., help="Model name (see `samkit models ls`)."), fmt: Output = FORMAT_OPT) -> None:
    """Download a model's official weights into the cache (resumable, hash-checked), with every
    other file the model is made of (e.g. Open-Vocabulary SAM's adapter, CLIP and SAM files)."""
    from ..registry import requirements
    from ..specs import get_spec

    spec = get_spec(name)
    if not spec.filename:
        msg = f"{spec.name} needs no weights (it is not a neural model)."
        emit_json({"name": spec.name, "path": None, "message": msg}) if fmt is Output.json else info(msg)
        return
    path, verified = _fetch(spec, fmt)
    companions = []
    for other in requirements(spec):
        other_path, other_verified = _fetch(other, fmt)
        companions.append({"name": other.name, "path": str(other_path), "verified": other_verified})
    if not spec.commercial_use:
        info(f"note: {spec.name} weights are under the {spec.license}.")
    if fmt is Output.json:
        emit_json({"name": spec.name, "path": str(path), "cached": True, "verified": verified,
                   "requires": companions})


_FULL = ("sha256", "git-blob", "md5")


def _digest_names(spec) -> list:
    """Which published facts of ``spec``'s file are checked, in words."""
    names = []
    if spec.sha256:
        names.append("sha256")
    elif spec.sha256_prefix:
        names.append(f"sha256 prefix {spec.sha256_prefix}")
    if spec.extra.get("git_blob_sha1"):
        names.append("git blob sha1")
    if spec.extra.get("md5"):
        names.append("md5")
    elif spec.extra.get("md5_prefix"):
        names.append(f"md5 prefix {spec.extra['md5_prefix']}")
    if spec.extra.get("size"):
        names.append(f"size {spec.extra['size']} bytes")
    return names or ["nothing"]


def _digest_line(spec) -> str:
    from .. import hub

    kind = hub.digest_kind(spec)
    verdict = "full digest pinned" if kind in _FULL else "no public full digest: the file stays UNVERIFIED"
    return f"{kind} ({verdict}); checks {', '.join(_digest_names(spec))}"


@app.command("verify")
def verify(name: str = typer.Argument(..., help="Model name (see `samkit models ls`)."),
           path: Optional[Path] = typer.Option(None, "--path", help="Check this file instead of the cached one."),
           allow_unverified: bool = typer.Option(
               False, "--allow-unverified",
               help="Exit 0 for a file that can only be checked by size (no public full digest)."),
           fmt: Output = FORMAT_OPT) -> None:
    """Check a weights file against its published digests (exit code 4 on a mismatch, and for a
    file without a public full digest unless --allow-unverified)."""
    from .. import hub
    from ..errors import DownloadError
    from ..specs import get_spec

    spec = get_spec(name)
    if not spec.filename and path is None:
        msg = f"{spec.name} has no weights file to verify (it is not a neural model)."
        emit_json({"name": spec.name, "path": None, "verified": None, "message": msg}) if fmt is Output.json else info(msg)
        return
    target = path if path is not None else hub.cached_path(spec)
    if target is None:
        raise DownloadError(f"weights of {spec.name} are not in the cache ({hub.target_path(spec)}). "
                            f"Fix: run `samkit models download {spec.name}` or copy the file there.")
    checked = hub.verify(target, spec)  # raises DownloadError on a mismatch
    names = ", ".join(_digest_names(spec))
    if checked:
        msg = f"{target}: OK ({names} match the official {spec.name} file)"
    else:
        msg = (f"{target}: unverified: no public full digest of the {spec.name} file exists "
               f"(checked: {names})")
        if not allow_unverified:
            raise DownloadError(f"{msg}. Fix: compare it yourself with {spec.url}, or pass "
                                "--allow-unverified to accept a file that could not be verified.")
    if fmt is Output.json:
        emit_json({"name": spec.name, "path": str(target), "verified": bool(checked),
                   "status": "verified" if checked else "unverified", "digest": hub.digest_kind(spec),
                   "message": msg})
    else:
        info(msg)
