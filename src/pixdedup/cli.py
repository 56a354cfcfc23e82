"""The command line: parses flags, prints; everything else lives in the library."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from typing import Any

import click

from . import __version__
from .config import CLUSTER_METHODS, DEVICES, LINK_MODES, load_config
from .engines import ENGINES
from .errors import PixdedupError
from .models import ScanResult, describe_exception
from .modes import mode_names
from .pipeline import scan as run_scan
from .selection import KEEPER_RULES


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


ERROR_LOG = "pixdedup-error.log"
_log_dir: list[str] = []
"""Where the running command writes the trace of an unexpected error (its output
folder); set by the command, else the user's cache folder."""


def _write_error_log(exc: BaseException) -> str | None:
    """The full trace in ``ERROR_LOG`` beside the command's reports; its path, or None
    where no folder could be written."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    text = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} pixdedup {__version__}: "
            f"{' '.join(sys.argv)}\n" + "".join(traceback.format_exception(exc)))
    for folder in (*_log_dir[-1:], os.path.join(cache, "pixdedup"), tempfile.gettempdir()):
        try:
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, ERROR_LOG)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return None


def _log_beside(out_dir: str) -> None:
    """Unexpected errors of this command are logged in ``out_dir`` (when local)."""
    from .sources.cloud import is_remote

    if not is_remote(out_dir) and os.path.isdir(out_dir):
        _log_dir.append(os.path.abspath(out_dir))


class _Main(click.Group):
    """Every command's whole-run problem (``PixdedupError``) becomes one line on stderr
    and its exit code, never a traceback; so does an unexpected error (exit 2), whose
    full trace goes to ``ERROR_LOG`` beside the reports."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PixdedupError as exc:
            click.echo(f"pixdedup: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: one line, the trace in a file
            path = _write_error_log(exc)
            where = f"the full trace is in {path}" if path else "no log file could be written"
            click.echo(f"pixdedup: error: unexpected failure ({describe_exception(exc)}); "
                       f"{where}", err=True)
            sys.exit(2)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pixdedup")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """pixdedup: find exact and near-duplicate images and keep the best of each group."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command("scan")
@click.argument("input_dir")
@click.option("--mode", type=click.Choice(mode_names()), default=None,
              help="near (default): exact + near duplicates, mirrored and turned copies "
                   "included; exact: byte-identical only; similar: near + learned embeddings, "
                   "for strong crops and colour filters; faces: the same person in different "
                   "photos (images without a face: NO_FACE_DETECTED).")
@click.option("--out", default=None,
              help="Output folder or cloud prefix [default: INPUT_DIR_deduplicated next to the "
                   "input]. An earlier pixdedup output there is replaced; any other non-empty "
                   "one is refused.")
@click.option("--link", type=click.Choice(LINK_MODES), default=None,
              help="How images are placed in best/ and duplicates/ [default: copy].")
@click.option("--dry-run", is_flag=True, default=None, help="Write only the reports.")
@click.option("--workers", "-p", type=int, default=None,
              help="Processes for decoding and verification [default: cores]; "
                   "--engine ray: the CPUs of the local Ray (a cluster's CPUs are all used).")
@click.option("--engine", type=click.Choice(ENGINES.names()), default=None,
              help="Where the work runs: local = this machine's processes and threads; "
                   "ray = the nodes of a Ray cluster (pip install 'pixdedup[ray]') "
                   "[default: local].")
@click.option("--address", default=None,
              help="--engine ray: the cluster to run on (auto, HOST:6379 or "
                   "ray://HOST:10001) [default: a local Ray for this scan, on 127.0.0.1].")
@click.option("--keep", type=click.Choice(KEEPER_RULES.names()), default=None,
              help="Rule that picks the best image of a group [default: quality].")
@click.option("--max-hamming-distance", type=int, default=None,
              help="Candidate search radius on 64-bit perceptual hashes [default: 10].")
@click.option("--orientations/--no-orientations", default=None,
              help="Also find mirrored, upside-down and 90/180/270-degree turned copies "
                   "by the DCT hash of each image mirrored and turned [default: on]. "
                   "Similar mode still tries mirrored copies among its embedding pairs.")
@click.option("--max-candidates-per-image", type=int, default=None,
              help="Candidate pairs each image keeps from the hash searches, the nearest "
                   "first (each search then keeps each image's 64 nearest hits); 0: no "
                   "limit and every hit [default: 8].")
@click.option("--min-pixel-similarity", type=float, default=None,
              help="Aligned pixel similarity needed to call a pair duplicates [default: 0.975].")
@click.option("--model", default=None,
              help="Similar mode: embedding model (see `pixdedup models`), or onnx:PATH / "
                   "torchscript:PATH for your own [default: efficientnet-lite0].")
@click.option("--min-cosine-similarity", "--min-similarity", "min_cosine_similarity",
              type=float, default=None,
              help="Similar mode: embedding cosine similarity that makes a pair a candidate; "
                   "candidates are confirmed by keypoints + RANSAC [default: 0.6].")
@click.option("--max-neighbors", type=int, default=None,
              help="Similar mode: most similar candidates verified per image; faces mode: "
                   "nearest faces searched per face [default: 16].")
@click.option("--face-detector", default=None,
              help="Faces mode: face detector, see `pixdedup models` [default: hog].")
@click.option("--face-model", default=None,
              help="Faces mode: face embedder, see `pixdedup models`, or onnx:PATH for an "
                   "ArcFace-style model (112x112 aligned input, cosine) [default: dlib-resnet].")
@click.option("--max-face-distance", type=float, default=None,
              help="Faces mode: face distance at or below which two faces are one person "
                   "[default: the model's calibrated value, dlib-resnet 0.45].")
@click.option("--faces", type=click.Choice(("largest", "all")), default=None,
              help="Faces mode: match each image by its largest face (registration photos) "
                   "or by any of its faces [default: largest].")
@click.option("--min-face-size", type=int, default=None,
              help="Faces mode: faces smaller than this (px) are never merged automatically "
                   "[default: 32].")
@click.option("--device", type=click.Choice(DEVICES), default=None,
              help="Similar mode: where the model runs [default: auto = cuda if available].")
@click.option("--embed-batch-size", type=int, default=None,
              help="Similar mode: images per inference batch [default: 256 on CUDA, 32 on CPU].")
@click.option("--cluster", type=click.Choice(CLUSTER_METHODS), default=None,
              help="components (default): verified pairs, chains broken; dbscan: unverified "
                   "connected components of embeddings within --eps (DBSCAN, min_samples=1).")
@click.option("--eps", type=float, default=None,
              help="With --cluster dbscan: cosine distance [default: 1 - min-cosine-similarity].")
@click.option("--min-color-correlation", type=float, default=None,
              help="Hue histogram correlation below which a pair is rejected [default: 0.6].")
@click.option("--max-changed-fraction", type=float, default=None,
              help="Largest fraction of the frame allowed to differ, e.g. a caption "
                   "[default: 0.12].")
@click.option("--max-megapixels", type=float, default=None,
              help="Images larger than this are reported as errors (decompression-bomb guard) "
                   "[default: 200].")
@click.option("--db", default=None,
              help="Feature store file; a rerun reuses every unchanged image's features "
                   "[default: OUT/pixdedup.db; for a cloud --out, a folder under "
                   "~/.cache/pixdedup].")
@click.option("--reset", is_flag=True, default=None,
              help="Discard the feature store and compute everything again.")
@click.option("--batch-size", type=int, default=None,
              help="Images per feature-store transaction [default: 64].")
@click.option("--endpoint-url", default=None,
              help="Cloud: service endpoint (S3-compatible stores, emulators).")
@click.option("--max-connections", type=int, default=None,
              help="Cloud: HTTP connection pool size [default: 64].")
@click.option("--download-concurrency", type=int, default=None,
              help="Cloud: downloads in flight [default: 16].")
@click.option("--max-requests-per-second", type=float, default=None,
              help="Cloud: request rate limit shared by all downloads, copies and uploads "
                   "[default: 0 = none].")
@click.option("--retries", type=int, default=None,
              help="Cloud: retries per request on 429/503, timeouts and dropped connections, "
                   "with exponential backoff and jitter [default: 5].")
@click.option("--request-timeout", type=float, default=None,
              help="Cloud: seconds per request [default: 60].")
@click.option("--config", "config_file", default=None, help="TOML config file ([scan] table).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def scan_cmd(input_dir: str, config_file: str | None, quiet: bool, as_json: bool,
             **flags: Any) -> None:
    """Scan INPUT_DIR (a folder, az://container/prefix or s3://bucket/prefix); write
    INPUT_DIR_deduplicated/{best,duplicates}/, report.html, image_report.csv and
    report.json (for a cloud input: next to the prefix, by server-side copy).  Nothing
    in INPUT_DIR is changed: review with `pixdedup review`, act with `pixdedup apply`.
    Features are kept in a store, so an interrupted run continues where it stopped and
    a rerun reads only new or changed files."""
    try:
        config = load_config(flags, config_file)
        _log_dir.append(_scan_log_dir(input_dir, config))
        show_progress = not quiet and not as_json and sys.stderr.isatty()
        with _engine(config, quiet) as engine:
            if show_progress:
                result = _scan_with_progress(input_dir, config, engine)
            else:
                result = run_scan(input_dir, config, collect=False, engine=engine)
    except KeyboardInterrupt:
        click.echo("pixdedup: interrupted", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(_summary_doc(result), indent=1))
    elif not quiet:
        _print_summary(result, config.dry_run)


def _scan_log_dir(input_dir: str, config: Any) -> str:
    """The scan's report folder when it is local, else its feature store's folder."""
    from .plan import default_output, default_store_dir
    from .sources.cloud import is_remote

    out = config.out or default_output(input_dir)
    if config.db:
        return os.path.dirname(os.path.abspath(config.db))
    return default_store_dir(out) if is_remote(out) else os.path.abspath(out)


@contextlib.contextmanager
def _engine(config: Any, quiet: bool) -> Iterator[Any]:
    """The scan's engine, started here so that a cluster's dashboard is shown before
    the work begins; closed at the end."""
    from .engines import engine_for

    engine = engine_for(config.validate().engine, config.workers, config.address)
    try:
        if not quiet and config.engine != "local":
            about = engine.describe()
            click.echo(f"engine      {about['engine']} at {about.get('address')}: "
                       f"{about.get('cpus')} CPUs, {about.get('gpus', 0)} GPUs"
                       + (f", dashboard {about['dashboard']}" if about.get("dashboard") else ""),
                       err=True)
        yield engine
    finally:
        engine.close()


def _scan_with_progress(input_dir: str, config: Any, engine: Any = None) -> ScanResult:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description:>11}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return run_scan(input_dir, config, progress, collect=False, engine=engine)


def _summary_doc(result: ScanResult) -> dict[str, Any]:
    s = result.summary
    faces = ({"faces": s.faces, "persons": s.persons, "no_face": s.no_face,
              "possible_same": s.possible_same, "face_seconds": round(s.face_seconds, 3)}
             if "face_matching" in result.timings else {})
    return {**faces, "images": s.images, "ok": s.ok, "groups": s.groups, "duplicates": s.duplicates,
            "unique": s.unique, "errors": s.errors, "skipped": s.skipped,
            "bytes_freeable": s.bytes_freeable, "output": result.output_dir,
            "extracted": s.extracted, "reused": s.reused, "removed": s.removed,
            "retries": s.retries, "bytes_downloaded": s.bytes_downloaded,
            "embedded": s.embedded, "reports": result.report_paths, "engine": result.engine,
            "seconds": round(result.timings.get("total", 0.0), 3)}


def _print_summary(result: ScanResult, dry_run: bool) -> None:
    s = result.summary
    click.echo(f"images      {s.images}  ({s.ok} read, {s.errors} errors, {s.skipped} skipped)")
    click.echo(f"store       {s.extracted} decoded, {s.reused} unchanged reused, "
               f"{s.removed} gone removed")
    if "embed" in result.timings:
        click.echo(f"embeddings  {s.embedded} computed, the rest reused from the store")
    if "face_matching" in result.timings:
        click.echo(f"faces       {s.faces} found, {s.persons} persons, {s.no_face} images "
                   f"without a face (NO_FACE_DETECTED), {s.possible_same} possible same person "
                   "(report.json)")
        click.echo(f"            encoding {s.face_seconds:.1f} s of CPU on the {s.extracted} new "
                   f"images, matching {result.timings['face_matching']:.2f} s")
    click.echo(f"groups      {s.groups}  ({s.duplicates} duplicates, {s.unique} unique)")
    click.echo(f"freeable    {_human_bytes(s.bytes_freeable)} in duplicates")
    if s.bytes_downloaded or s.retries:
        click.echo(f"cloud       {_human_bytes(s.bytes_downloaded)} downloaded, "
                   f"{s.retries} requests retried")
    if result.engine.get("per_node"):
        nodes = ", ".join(f"{n['address'] or n['node'][:8]} {n.get('extract', 0)}"
                          for n in result.engine["per_node"][:8])
        count = result.engine["nodes"]
        click.echo(f"engine      {result.engine['engine']}: {count} node{'s' * (count != 1)}, "
                   f"{result.engine['workers']} workers; images extracted per node: {nodes}")
    total = result.timings.get("total", 0.0)
    rate = s.images / total if total > 0 else 0.0
    click.echo(f"time        {total:.1f} s ({rate:.1f} images/s)")
    where = "reports only (dry run)" if dry_run else "best/, duplicates/, reports"
    click.echo(f"output      {result.output_dir}  [{where}]")
    click.echo(f"report      {result.report_paths.get('csv')}")
    if result.report_paths.get("html"):
        click.echo(f"page        {result.report_paths['html']}  (pixdedup review to correct it)")


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models_cmd(as_json: bool) -> None:
    """List the embedding models (--mode similar) and the face detectors and face
    models (--mode faces): whether each can run offline now, and where its weights
    come from."""
    from .features import faces
    from .features.embeddings import DEFAULT_MODEL, MODELS

    rows: list[dict[str, Any]] = []
    for name in MODELS.names():
        spec = MODELS.get(name)
        reason = spec.available()
        rows.append({"kind": "embedding", "name": name, "key": spec.key,
                     "default": name == DEFAULT_MODEL, "available": reason is None,
                     "reason": reason, "weights": spec.weights, "input_size": spec.input_size})
    for name in faces.DETECTORS.names():
        det = faces.DETECTORS.get(name)
        reason = det.available()
        rows.append({"kind": "face-detector", "name": name, "default": name == faces.DEFAULT_DETECTOR,
                     "available": reason is None, "reason": reason, "weights": det.weights})
    for name in faces.FACE_MODELS.names():
        fm = faces.FACE_MODELS.get(name)
        reason = fm.available()
        rows.append({"kind": "face-model", "name": name, "key": f"{fm.name}@{fm.version}",
                     "default": name == faces.DEFAULT_FACE_MODEL, "available": reason is None,
                     "reason": reason, "weights": fm.weights, "metric": fm.metric,
                     "max_face_distance": fm.threshold})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    titles = {"embedding": "Embedding models (--mode similar --model)",
              "face-detector": "Face detectors (--mode faces --face-detector)",
              "face-model": "Face models (--mode faces --face-model)"}
    kind = None
    for r in rows:
        if r["kind"] != kind:
            kind = r["kind"]
            click.echo(("" if kind == "embedding" else "\n") + titles[kind])
        state = "available" if r["available"] else f"not available: {r['reason']}"
        mark = " (default)" if r["default"] else ""
        click.echo(f"{r['name']}{mark}\n  {state}\n  weights: {r['weights']}")
        if kind == "embedding" and r["name"] == MODELS.names()[-1]:
            click.echo("your own: --model onnx:PATH or --model torchscript:PATH (NCHW RGB, "
                       "ImageNet normalisation; output flattened and L2-normalised)")
    click.echo("your own: --face-model onnx:PATH (ArcFace-style: 1x3x112x112 RGB aligned by "
               "5 landmarks, (x - 127.5) / 127.5; cosine distance)")


@main.command("stats")
@click.option("--db", required=True, help="Feature store file (OUT/pixdedup.db).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stats_cmd(db: str, as_json: bool) -> None:
    """Counts, groups, errors and size of a feature store."""
    from .store import open_existing

    with open_existing(db) as store:
        doc = store.stats()
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    by = doc["by_status"]
    click.echo(f"store       {doc['path']}  ({_human_bytes(int(doc['bytes']))})")
    click.echo(f"images      {doc['images']}  ({by.get('ok', 0)} read, {by.get('error', 0)} errors, "
               f"{by.get('skipped', 0)} skipped)")
    click.echo(f"groups      {doc['groups']}  ({doc['duplicates']} duplicates)")
    last = doc["last_run"]
    if last:
        state = "finished" if last["finished"] else "interrupted"
        click.echo(f"last run    #{last['id']} {last['mode']} on {last['root']} ({state}); "
                   f"{doc['runs']} runs in all")


@main.command("query")
@click.argument("paths", nargs=-1, required=True)
@click.option("--db", required=True, help="Feature store of the collection (OUT/pixdedup.db).")
@click.option("--workers", "-p", type=int, default=None, help="Processes for decoding the queries.")
@click.option("--json", "as_json", is_flag=True, help="Print the matches as JSON.")
def query_cmd(paths: tuple[str, ...], db: str, workers: int | None, as_json: bool) -> None:
    """Is this image already in my collection?  Looks PATHS (images or folders) up in the
    feature store of an earlier scan, without scanning the collection again (a faces-mode
    store: is this person already registered?).  Exit code 0: every query has a match;
    1: some have none; 2: error."""
    from .query import query

    answers = query(list(paths), db, workers=workers)
    if as_json:
        click.echo(json.dumps([a.to_dict() for a in answers], indent=1))
    else:
        for a in answers:
            if a.error:
                click.echo(f"{a.path}: error: {a.error}")
            elif not a.matches:
                what = "no face found; " if a.note == "NO_FACE_DETECTED" else ""
                click.echo(f"{a.path}: new ({what}no duplicate in the collection)")
            else:
                click.echo(f"{a.path}: {len(a.matches)} match(es)")
                for m in a.matches:
                    ev = m.evidence
                    detail = (f"same person, face distance {ev.face_distance}" if ev.stage == "face"
                              else f"{ev.stage}, distance {ev.hash_distance}, "
                                   f"similarity {ev.similarity}")
                    if ev.transform:
                        detail += f", {ev.transform}"
                    click.echo(f"    {m.rel_path}  [{detail}]")
    sys.exit(0 if all(a.matches for a in answers) else 1)


_VERB = {"move": "moved to", "delete": "moved to the trash", "copy": "placed in",
         "hardlink": "placed in", "symlink": "placed in"}


def _print_outcome(o: Any, undo: bool, out_dir: str) -> None:
    if o.dry_run:
        where = f"{_VERB[o.action]} {o.destination}" if o.destination else "permanently deleted"
        click.echo(f"dry run: {o.planned} files ({_human_bytes(o.bytes)}) would be {where}; "
                   "nothing changed")
    elif undo:
        click.echo(f"undo #{o.journal} ({o.action}): {o.done} files restored ({_human_bytes(o.bytes)})")
    else:
        where = f"{_VERB[o.action]} {o.destination}" if o.destination else "permanently deleted"
        resumed = " (finished an interrupted apply)" if o.resumed else ""
        click.echo(f"apply #{o.journal}{resumed}: {o.done} files ({_human_bytes(o.bytes)}) {where}")
    if o.gone:
        click.echo(f"already gone {o.gone} files of the scan are no longer in the collection "
                   "(an earlier apply took them; scan again to refresh)")
    if o.problems:
        click.echo(f"left alone  {len(o.problems)}:")
        for path, reason in o.problems[:50]:
            click.echo(f"    {path}: {reason}")
        if len(o.problems) > 50:
            click.echo(f"    ... and {len(o.problems) - 50} more (--json lists all)")
    if not o.dry_run and not undo:
        click.echo(f"undo        pixdedup undo {out_dir}")


@main.command("apply")
@click.argument("out_dir")
@click.option("--action", required=True, type=click.Choice(("copy", "hardlink", "symlink", "move",
                                                             "delete")),
              help="move/delete: take the duplicates out of the collection; copy/hardlink/"
                   "symlink: rebuild OUT_DIR/best and OUT_DIR/duplicates by the decisions.")
@click.option("--to", "dest", default=None,
              help="--action move: where duplicates go [default: OUT_DIR/moved].")
@click.option("--trash", default=None,
              help="--action delete: the trash folder [default: OUT_DIR/trash].")
@click.option("--permanent", is_flag=True,
              help="--action delete: unlink instead of moving to the trash (cannot be undone).")
@click.option("--only-accepted", is_flag=True, help="Act only on groups accepted in the review.")
@click.option("--dry-run", is_flag=True, help="Show what would happen; change nothing.")
@click.option("--db", default=None, help="Feature store [default: OUT_DIR/pixdedup.db].")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def apply_cmd(out_dir: str, action: str, dest: str | None, trash: str | None, permanent: bool,
              only_accepted: bool, dry_run: bool, db: str | None, as_json: bool) -> None:
    """Act on the last scan's groups as reviewed (`pixdedup review`).  Every file is
    checked against the scan's content hash first, a group's kept image is never
    touched and must be intact before any duplicate goes, and every step is written to
    a journal first: an interrupted apply is finished by running it again, and
    `pixdedup undo OUT_DIR` restores what it did.  Exit code 1 when files were left
    alone (listed, with the reason)."""
    _log_beside(out_dir)
    from .apply import apply

    try:
        outcome = apply(out_dir, action, dest=dest, trash=trash, permanent=permanent,
                        dry_run=dry_run, only_accepted=only_accepted, db=db)
    except KeyboardInterrupt:
        click.echo("pixdedup: interrupted; run the same command again to finish, or "
                   f"'pixdedup undo {out_dir}'", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(outcome.to_dict(), indent=1))
    else:
        _print_outcome(outcome, False, out_dir)
    sys.exit(1 if outcome.problems else 0)


@main.command("undo")
@click.argument("out_dir")
@click.option("--db", default=None, help="Feature store [default: OUT_DIR/pixdedup.db].")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def undo_cmd(out_dir: str, db: str | None, as_json: bool) -> None:
    """Restore everything the last apply changed (also an interrupted one), byte for
    byte: moved and trashed files go back to their place.  Permanent deletions cannot
    be restored and are listed.  Run it again to undo the apply before."""
    _log_beside(out_dir)
    from .apply import undo

    outcome = undo(out_dir, db=db)
    if as_json:
        click.echo(json.dumps(outcome.to_dict(), indent=1))
    else:
        _print_outcome(outcome, True, out_dir)
    sys.exit(1 if outcome.problems else 0)


@main.command("review")
@click.argument("out_dir")
@click.option("--db", default=None, help="Feature store [default: OUT_DIR/pixdedup.db].")
@click.option("--port", type=int, default=0, help="Port on 127.0.0.1 [default: a free one].")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser.")
def review_cmd(out_dir: str, db: str | None, port: int, open_browser: bool) -> None:
    """Review a scan's groups in the browser: choose the image to keep, mark images that
    are not duplicates, accept groups.  Serves OUT_DIR/report.html on 127.0.0.1 only,
    behind a random token; every decision is saved in the feature store at once and is
    honoured by later scans and by `pixdedup apply`.  Ctrl-C stops the server."""
    _log_beside(out_dir)
    from .review import ReviewServer

    server = ReviewServer(out_dir, db=db, port=port)
    click.echo(f"review: {server.url}")
    click.echo("decisions are saved as you make them; Ctrl-C stops the server")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


if __name__ == "__main__":  # pragma: no cover
    main()
