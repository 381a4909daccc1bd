"""Build tool of the Jupyter Book: a papermill runner with provenance (not part of the stabkit package).

Command line (run from anywhere; paths default to the repository that holds this file)::

    python tools/book.py run [--scale S] [--only NAME ...] [--jobs N] [-p KEY VALUE ...]
                             [--toc _toc.yml] [--out book/executed] [--timeout SECONDS]
    python tools/book.py list [--toc _toc.yml]

``run`` executes every notebook listed in ``_toc.yml`` under ``book/executed/<name>``: the source is
``notebooks/<name>.ipynb``, the executed copy ``book/executed/<name>.ipynb``. Notebooks execute with
papermill (kernel ``python3``) with the **repository root as working directory**, so relative paths in
notebooks (``results/``, ``runs/``, ``sweeps/``) are relative to the repository root.

The runner, for each notebook:

* sets ``TQDM_DISABLE=1`` in the kernel's environment (no progress bars on the pages; see
  :func:`kernel_environment`) and ``STABKIT_PROVENANCE=<file>`` so that
  :func:`stabkit.report.page.record_inputs` and :func:`stabkit.report.page.record` in the notebook can
  report which result tables it read, the device it used, its seeds;
* executes it into a temporary file; if papermill raised or the notebook carries
  ``metadata.papermill.exception``, the notebook is **not** published: ``book/executed/<name>.ipynb`` (the
  page an earlier run published, if any) is left as it was, with its provenance entry, the failed copy is
  kept in ``_build/failed/<name>.ipynb`` for inspection, the error is printed with the notebook's name and
  whether an earlier page was kept, and the command exits with status 1;
* otherwise post-processes it: the papermill ``injected-parameters`` cell is tagged ``remove-cell`` and
  the ``parameters`` cell ``hide-cell``, other code cells ``hide-input`` (outputs shown, code folded); stderr streams and progress-bar widgets are removed from the
  outputs; a "Provenance" admonition is inserted after the title (git commit and dirty flag, stabkit /
  torch / Python versions, device, scale and parameters, wall time, hashes of the recorded inputs); the
  same record goes to ``metadata.stabkit.provenance`` and to ``book/executed/provenance.json`` (written
  atomically).

A notebook source listed in the table of contents but missing from ``notebooks/`` is an error reported
before anything runs (exit status 2).

The notebooks' side (glue, provenance records, page facts) is :mod:`stabkit.report.page`.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without an installed stabkit
    sys.path.insert(0, str(REPO_ROOT))

from stabkit.atomic import atomic_write, atomic_write_text  # noqa: E402
from stabkit.report.page import ENV_PROVENANCE, collect_records, repo_relative  # noqa: E402
from stabkit.runs import git_state  # noqa: E402

EXECUTED_PREFIX = "book/executed/"
PROVENANCE_TAG = "stabkit-provenance"

__all__ = ["kernel_environment", "git_state", "NotebookEntry", "NotebookResult", "BookRunError", "toc_notebooks",
           "run_notebooks", "main"]


# --------------------------------------------------------------------------------------------------
# Table of contents
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NotebookEntry:
    """One notebook of the book: ``name`` (``fig1_noise_corrupted_cifar``), its source and target."""

    name: str
    source: Path
    target: Path


def _toc_files(node: Any) -> list[str]:
    files: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("file"), str):
            files.append(node["file"])
        if isinstance(node.get("root"), str):
            files.append(node["root"])
        for key in ("parts", "chapters", "sections", "entries"):
            if key in node:
                files += _toc_files(node[key])
    elif isinstance(node, list):
        for item in node:
            files += _toc_files(item)
    return files


def toc_notebooks(toc: str | os.PathLike = REPO_ROOT / "_toc.yml", root: str | os.PathLike | None = None,
                  out: str | os.PathLike | None = None) -> list[NotebookEntry]:
    """Notebooks listed in a Jupyter Book ``_toc.yml``: every entry ``book/executed/<name>``.

    ``root`` (default: the toc's folder) holds ``notebooks/<name>.ipynb``; ``out`` (default
    ``<root>/book/executed``) receives ``<name>.ipynb``. Order = order of the table of contents.
    """
    import yaml

    toc = Path(toc)
    if not toc.is_file():
        raise ValueError(f"toc: {toc} does not exist")
    root = Path(root) if root is not None else toc.resolve().parent
    out = Path(out) if out is not None else root / EXECUTED_PREFIX
    data = yaml.safe_load(toc.read_text(encoding="utf8"))
    entries, seen = [], set()
    for f in _toc_files(data):
        f = f.strip().removesuffix(".ipynb")
        if not f.startswith(EXECUTED_PREFIX):
            continue
        name = f[len(EXECUTED_PREFIX):]
        if name in seen:
            continue
        seen.add(name)
        entries.append(NotebookEntry(name, root / "notebooks" / f"{name}.ipynb", out / f"{name}.ipynb"))
    return entries


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------
def _environment() -> dict:
    import stabkit

    env = {"stabkit": stabkit.__version__, "python": platform.python_version()}
    try:
        import torch

        env["torch"] = torch.__version__
        if torch.cuda.is_available():
            env["auto_device"] = f"cuda ({torch.cuda.get_device_name(0)})"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            env["auto_device"] = "mps"
        else:
            env["auto_device"] = "cpu"
        env["threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        env["torch"] = None
        env["auto_device"] = "cpu"
    return env


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _provenance_markdown(prov: dict) -> str:
    git = prov["git"]
    commit = git["commit"][:10] if git.get("commit") else "none (no commit yet)"
    dirty = {True: " with uncommitted changes", False: " (clean tree)", None: ""}[git.get("dirty")]
    params = prov["parameters"]
    scale = params.get("scale", "-")
    facts = prov["recorded"]["facts"]
    device = facts.get("device") or (
        f"{params.get('device')} -> {prov['environment']['auto_device']}" if params.get("device") == "auto"
        else params.get("device", prov["environment"]["auto_device"]))
    lines = [
        "```{admonition} Provenance of this page",
        ":class: note dropdown",
        f"- **Scale** `{scale}`; **device** {device}; executed {prov['executed_at']} in "
        f"{_fmt_seconds(prov['wall_seconds'])}",
        f"- **Code** commit `{commit}`{dirty}; stabkit {prov['environment']['stabkit']}, "
        f"torch {prov['environment']['torch']}, Python {prov['environment']['python']}",
        "- **Parameters** " + ", ".join(f"`{k}={v!r}`" for k, v in params.items()),
    ]
    extra = {k: v for k, v in facts.items() if k != "device"}
    if extra:
        lines.append("- **Recorded** " + "; ".join(f"{k}: {v}" for k, v in extra.items()))
    inputs = prov["recorded"]["inputs"]
    if inputs:
        lines.append(f"- **Inputs** (hash of all: `{prov['inputs_sha256'][:12]}`)")
        for rec in inputs:
            where = f"`{rec['path']}`" if rec.get("path") else f"{rec.get('rows', '?')} rows"
            lines.append(f"  - {rec['label']}: {where}, sha256 `{rec['sha256'][:12]}`")
    else:
        lines.append("- **Inputs** none recorded (everything computed in the notebook)")
    lines.append("```")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------------
class BookRunError(RuntimeError):
    """Raised (or reported by the CLI) when notebooks are missing or failed."""


@dataclass
class NotebookResult:
    """Outcome of one notebook: ``ok``, wall time, the error text, where the output went; ``kept``: the page
    an earlier run published, left as it was when this run failed (None: there was none)."""

    name: str
    ok: bool
    seconds: float
    error: str = ""
    output: Path | None = None
    failed_copy: Path | None = None
    provenance: dict = field(default_factory=dict)
    kept: Path | None = None


def _error_summary(exc: BaseException | None, nb: Any | None) -> str:
    if exc is not None:
        ename = getattr(exc, "ename", None)
        evalue = getattr(exc, "evalue", None)
        cell = getattr(exc, "exec_count", None)
        if ename:
            return f"{ename}: {evalue}" + (f" (cell [{cell}])" if cell else "")
        return f"{type(exc).__name__}: {exc}".strip()
    if nb is not None:
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    return f"{out.get('ename')}: {out.get('evalue')}"
    return "papermill marked the notebook as failed"


def _default_parameters(source: Path) -> dict:
    try:
        import papermill

        info = papermill.inspect_notebook(str(source))
    except Exception:  # noqa: BLE001 - no parameters cell or unparsable: not fatal
        return {}
    out = {}
    for k, v in info.items():
        raw = v.get("default")
        try:
            import ast

            out[k] = ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError):
            out[k] = raw
    return out


def _postprocess(nb: Any, prov: dict) -> Any:
    import nbformat

    for cell in nb.cells:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        elif "parameters" in tags and not {"hide-cell", "remove-cell", "hide-input"} & set(tags):
            tags.append("hide-cell")
        elif cell.cell_type == "code" and not {"hide-cell", "remove-cell", "hide-input", "remove-input"} & set(tags):
            tags.append("hide-input")  # pages read as text and figures; the code stays one click away
        if cell.cell_type == "code":
            kept = []
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    continue
                if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                    continue
                kept.append(out)
            cell["outputs"] = kept
    # drop a provenance cell from an earlier pass, then insert after the title
    nb.cells = [c for c in nb.cells if PROVENANCE_TAG not in c.get("metadata", {}).get("tags", [])]
    pos = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            pos = i + 1
            break
    md = nbformat.v4.new_markdown_cell(_provenance_markdown(prov))
    md.metadata["tags"] = [PROVENANCE_TAG]
    nb.cells.insert(pos, md)
    nb.metadata["stabkit"] = {"provenance": prov}
    nb.metadata.pop("widgets", None)
    return nb


def kernel_environment() -> dict[str, str]:
    """Environment variables the runner (and the notebook tests) set for the kernels: tqdm's own
    ``TQDM_DISABLE=1`` (no progress bars on pages). Where CIFAR-10 is found is
    :func:`stabkit.data.data_roots`'s business (``$STABKIT_DATA``, the cache, a ``shared/data`` folder
    beside the checkout)."""
    return {"TQDM_DISABLE": "1"}


def _execute_one(entry: NotebookEntry, parameters: dict, kernel: str, cwd: Path, timeout: float | None,
                 failed_dir: Path) -> NotebookResult:
    import nbformat
    import papermill

    entry.target.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f"stabkit-book-{entry.name.replace('/', '_')}-"))
    tmp_out = tmpdir / "executed.ipynb"
    prov_file = tmpdir / "records.jsonl"
    prov_file.touch()
    env = {**kernel_environment(), ENV_PROVENANCE: str(prov_file)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    exc: BaseException | None = None
    t0 = time.perf_counter()
    started = _dt.datetime.now().astimezone()
    try:
        papermill.execute_notebook(
            str(entry.source), str(tmp_out), parameters=parameters, kernel_name=kernel, cwd=str(cwd),
            progress_bar=False, log_output=False, request_save_on_cell_execute=False,
            execution_timeout=timeout,
            # the kernel's own log: its "running over TCP without encryption" warning (a loopback-only
            # kernel) would otherwise print once per notebook
            extra_arguments=["--log-level=ERROR"],
        )
    except Exception as e:  # noqa: BLE001 - any failure means: do not publish
        exc = e
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - t0
    nb = nbformat.read(tmp_out, as_version=4) if tmp_out.is_file() else None
    failed = exc is not None or nb is None or bool(nb.metadata.get("papermill", {}).get("exception"))
    try:
        if failed:  # the published page (an earlier run's) stays as it was: a failure never removes a page
            copy = None
            if tmp_out.is_file():
                failed_dir.mkdir(parents=True, exist_ok=True)
                copy = failed_dir / f"{entry.name}.ipynb"
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tmp_out, copy)
            return NotebookResult(entry.name, False, seconds, _error_summary(exc, nb), None, copy,
                                  kept=entry.target if entry.target.is_file() else None)
        records = [json.loads(line) for line in prov_file.read_text(encoding="utf8").splitlines() if line.strip()]
        rec = collect_records(records)
        params = {**_default_parameters(entry.source), **parameters}
        prov = {
            "notebook": entry.name,
            "source": repo_relative(entry.source),
            "executed_at": started.strftime("%Y-%m-%d %H:%M %Z"),
            "wall_seconds": round(seconds, 2),
            "git": git_state(REPO_ROOT),
            "environment": _environment(),
            "parameters": params,
            "recorded": rec,
            "inputs_sha256": hashlib.sha256(
                "".join(sorted(r["sha256"] for r in rec["inputs"])).encode()).hexdigest(),
        }
        nb = _postprocess(nb, prov)
        atomic_write(entry.target, lambda tmp: nbformat.write(nb, str(tmp)))
        (failed_dir / f"{entry.name}.ipynb").unlink(missing_ok=True)  # a failed copy of an earlier run
        return NotebookResult(entry.name, True, seconds, "", entry.target, None, prov)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _kept_text(res: NotebookResult) -> str:
    """What a failure left of the published page, for the messages."""
    if res.ok:
        return ""
    if res.kept is None:
        return "; no page was published before"
    when = _dt.datetime.fromtimestamp(res.kept.stat().st_mtime).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"; the published page {repo_relative(res.kept)} (written {when}) is left as it was"


def _execute_star(args: tuple) -> NotebookResult:
    return _execute_one(*args)


def run_notebooks(
    names: Sequence[str] | None = None,
    *,
    toc: str | os.PathLike = REPO_ROOT / "_toc.yml",
    out: str | os.PathLike | None = None,
    scale: str | None = None,
    parameters: dict | None = None,
    jobs: int = 1,
    kernel: str = "python3",
    timeout: float | None = None,
    cwd: str | os.PathLike | None = None,
    progress: bool = True,
    failed_dir: str | os.PathLike | None = None,
) -> list[NotebookResult]:
    """Execute the book's notebooks with papermill and publish those that succeed.

    Parameters
    ----------
    names : sequence of str, optional
        Only these notebooks (names as in ``book/executed/<name>``); default: all of the toc.
    toc : path
        The ``_toc.yml``; its folder is the repository root unless ``cwd`` says otherwise.
    out : path, optional
        Where executed notebooks go (default ``<root>/book/executed``).
    scale : str, optional
        Injected as the ``scale`` parameter (default: each notebook's own default).
    parameters : dict, optional
        Further parameters injected into every notebook.
    jobs : int
        Notebooks executed in parallel (processes; default 1).
    timeout : float, optional
        Per-cell execution timeout in seconds.
    cwd : path, optional
        Working directory of the kernels (default: the toc's folder = repository root).

    Returns one :class:`NotebookResult` per notebook, in toc order. Raises :class:`BookRunError` before
    running anything if a requested notebook is unknown or its source is missing. Failed notebooks are
    not written to ``out`` (see the module docstring); the caller decides what to do with them.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    toc = Path(toc)
    root = toc.resolve().parent
    entries = toc_notebooks(toc, root=root, out=out)
    if names:
        known = {e.name: e for e in entries}
        unknown = [n for n in names if n.removesuffix(".ipynb") not in known]
        if unknown:
            raise BookRunError(f"not in {toc}: {', '.join(unknown)}; known notebooks: {', '.join(known) or 'none'}")
        wanted = {n.removesuffix(".ipynb") for n in names}
        entries = [e for e in entries if e.name in wanted]
    missing = [e for e in entries if not e.source.is_file()]
    if missing:
        raise BookRunError(
            "notebook sources listed in " + str(toc) + " are missing:\n" + "\n".join(
                f"  {EXECUTED_PREFIX}{e.name} -> {repo_relative(e.source)} (not found)" for e in missing))
    params = dict(parameters or {})
    if scale is not None:
        params["scale"] = scale
    cwd = Path(cwd) if cwd is not None else root
    failed_dir = Path(failed_dir) if failed_dir is not None else root / "_build" / "failed"
    work = [(e, params, kernel, cwd, timeout, failed_dir) for e in entries]

    from tqdm import tqdm

    results: dict[str, NotebookResult] = {}
    bar = tqdm(total=len(work), desc="notebooks", unit="nb", disable=not progress, file=sys.stdout)

    def report(res: NotebookResult) -> None:
        results[res.name] = res
        status = "ok    " if res.ok else "FAILED"
        msg = f"{status} {res.name:<40s} {_fmt_seconds(res.seconds):>9s}"
        if not res.ok:
            msg += f"  {res.error}" + _kept_text(res)
        if progress:
            bar.write(msg, file=sys.stdout)
        else:
            print(msg, flush=True)
        bar.update(1)

    if jobs == 1:
        for w in work:
            bar.set_postfix_str(w[0].name)
            report(_execute_one(*w))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_execute_star, w) for w in work]
            for fut in as_completed(futures):
                report(fut.result())
    bar.close()
    ordered = [results[e.name] for e in entries]
    ok = [r for r in ordered if r.ok]
    if ok:
        manifest_path = (Path(out) if out is not None else root / EXECUTED_PREFIX) / "provenance.json"
        manifest = {}
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf8"))
            except json.JSONDecodeError:
                manifest = {}
        for r in ordered:
            if r.ok:
                manifest[r.name] = r.provenance
            elif r.kept is None:  # a kept page keeps its provenance entry
                manifest.pop(r.name, None)
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1, default=str))
    return ordered


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python tools/book.py``; returns the exit status (0 ok, 1 failed, 2 usage)."""
    p = argparse.ArgumentParser(prog="python tools/book.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute the book's notebooks into book/executed/ with provenance")
    r.add_argument("--scale", default=None, help="inject scale=S into every notebook (tiny | small | paper); "
                   "default: each notebook's own default (small)")
    r.add_argument("--only", nargs="+", metavar="NAME", default=None,
                   help="only these notebooks (names as in book/executed/<name>)")
    r.add_argument("--jobs", type=int, default=1, help="notebooks executed in parallel (default 1)")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[],
                   help="inject a parameter into every notebook (VALUE parsed as YAML)")
    r.add_argument("--toc", default=str(REPO_ROOT / "_toc.yml"), help="table of contents (default: _toc.yml)")
    r.add_argument("--out", default=None, help="output folder (default: book/executed beside the toc)")
    r.add_argument("--timeout", type=float, default=None, help="per-cell timeout in seconds (default none)")
    r.add_argument("--kernel", default="python3", help="Jupyter kernel (default python3)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    ls = sub.add_parser("list", help="list the notebooks of the table of contents and whether sources exist")
    ls.add_argument("--toc", default=str(REPO_ROOT / "_toc.yml"))
    args = p.parse_args(argv)

    if args.cmd == "list":
        try:
            entries = toc_notebooks(args.toc)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for e in entries:
            state = "executed" if e.target.is_file() else ("source" if e.source.is_file() else "MISSING")
            print(f"{state:9s} {e.name}")
        return 0 if all(e.source.is_file() for e in entries) else 2

    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    params = {k: _parse_value(v) for k, v in args.param}
    t0 = time.perf_counter()
    try:
        results = run_notebooks(args.only, toc=args.toc, out=args.out, scale=args.scale, parameters=params,
                                jobs=args.jobs, kernel=args.kernel, timeout=args.timeout,
                                progress=not args.no_progress)
    except (BookRunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [r for r in results if not r.ok]
    total = time.perf_counter() - t0
    print(f"{len(results) - len(failed)}/{len(results)} notebooks executed in {_fmt_seconds(total)}")
    if failed:
        print("\nRefusing to build the book: these notebooks failed and were not published:", file=sys.stderr)
        for r in failed:
            where = f" (failed copy: {repo_relative(r.failed_copy)})" if r.failed_copy else ""
            print(f"  {r.name}: {r.error}{where}{_kept_text(r)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
