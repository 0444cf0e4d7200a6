"""Run-directory conventions: config snapshot, JSONL logs, TensorBoard, loss curves, optional W&B.

Every project's run root looks the same, so tools and people can read any of them::

    RUN_ROOT/
      config.json          snapshot of the resolved config (dataclasses, Paths, numpy scalars -> JSON)
      logs/train.jsonl     one JSON object per line: step, epoch, time (unix wall clock) + scalars
      logs/eval.jsonl      same, for evaluations
      tb/                  TensorBoard events (train/<key>, eval/<key>)
      curves/loss.csv      every loss-like train key vs step, and loss.png of the same
      checkpoints/  onnx/  created when first asked for
      summary.md           written by the project at the end (``markdown_table``/``write_summary``)

Only rank 0 writes. Other ranks get the same object with every method a no-op, so training code
calls ``run.log_train(...)`` everywhere without rank checks. Everything is created lazily: a run
that crashes before its first log line leaves only ``config.json``.

JSONL lines are flushed to the OS after each write (survives a crash of the process; an fsync per
line would survive a power cut too but costs milliseconds each). Non-finite floats are written as
``null`` so the files stay strict JSON (``jq``, browsers); a loss that went NaN shows up as a null.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import enum
import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_RESERVED = ("step", "epoch", "time")


# --------------------------------------------------------------------------------------------------
# JSON conversion


def to_jsonable(obj: Any) -> Any:
    """Converts configs and metrics to JSON-serialisable values.

    Handles dataclasses, mappings, sequences, sets, ``Path``, enums, datetimes, numpy scalars/arrays,
    torch tensors/dtypes/devices; non-finite floats become ``None``; anything else becomes ``repr``
    so a config snapshot never fails on an exotic field.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None  # float(): np.float64 is a float subclass
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # Not dataclasses.asdict: it deep-copies every field (tensors included) before we convert.
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (datetime.datetime, datetime.date)):
        return obj.isoformat()
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_jsonable(v) for v in obj), key=repr)
    if _is_array_like(obj):
        return to_jsonable(obj.item() if obj.ndim == 0 else obj.tolist())
    if type(obj).__module__.startswith(("numpy", "torch")):
        return str(obj)  # torch.dtype, torch.device, numpy dtype
    return repr(obj)


def _is_array_like(obj: Any) -> bool:
    # numpy scalars/arrays and torch tensors, recognised without importing either library.
    return (type(obj).__module__.startswith(("numpy", "torch")) and hasattr(obj, "ndim")
            and hasattr(obj, "item") and hasattr(obj, "tolist"))


def _plain(value: Any) -> Any:
    """0-d numpy/torch values as Python scalars, everything else unchanged."""
    return value.item() if _is_array_like(value) and value.ndim == 0 else value


# --------------------------------------------------------------------------------------------------
# Markdown


def _fmt_cell(value: Any, floatfmt: str) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return format(value, floatfmt) if math.isfinite(value) else str(value)
    text = str(value)
    # A literal | would split the cell; a newline would end the table.
    return text.replace("|", "\\|").replace("\r\n", " ").replace("\n", " ")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def markdown_table(rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
                   headers: Sequence[str] | None = None, floatfmt: str = ".3f") -> str:
    """Formats rows as a GitHub-flavoured Markdown table.

    Args:
        rows: dicts (columns are the union of keys in first-seen order, missing cells empty) or lists.
        headers: column names; for dict rows it selects and orders columns, for list rows it is
            required.
        floatfmt: ``format`` spec for floats (``".3f"``, ``".1%"``...). NaN/inf print as such.

    Returns:
        The table (no trailing newline). Numeric columns are right-aligned; cells are padded so the
        raw text lines up too.

    Raises:
        ValueError: list rows without headers, or a row longer than the headers.
    """
    rows = list(rows)
    if rows and isinstance(rows[0], Mapping):
        if headers is None:
            headers = list(dict.fromkeys(k for row in rows for k in row))
        raw = [[row.get(h) for h in headers] for row in rows]
    else:
        if headers is None:
            raise ValueError("markdown_table: list rows need headers=[...]")
        raw = []
        for row in rows:
            row = list(row)
            if len(row) > len(headers):
                raise ValueError(f"row {row!r} has {len(row)} cells but there are {len(headers)} headers")
            raw.append(row + [None] * (len(headers) - len(row)))
    headers = [str(h) for h in headers]
    cells = [[_fmt_cell(v, floatfmt) for v in row] for row in raw]
    numeric = [
        any(row[j] is not None for row in raw)
        and all(row[j] is None or _is_number(_plain(row[j])) for row in raw)
        for j in range(len(headers))
    ]
    widths = [max([3, len(_fmt_cell(h, floatfmt))] + [len(row[j]) for row in cells])
              for j, h in enumerate(headers)]

    def line(values: Sequence[str], right: Sequence[bool]) -> str:
        padded = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)]
        return "| " + " | ".join(padded) + " |"

    sep = "| " + " | ".join(("-" * (w - 1) + ":") if r else "-" * w
                            for w, r in zip(widths, numeric)) + " |"
    out = [line([_fmt_cell(h, floatfmt) for h in headers], [False] * len(headers)), sep]
    out += [line(row, numeric) for row in cells]
    return "\n".join(out)


SummarySections = Mapping[str, Any] | Sequence[tuple[str, Any]]


def format_summary(sections: SummarySections, title: str | None = None,
                   floatfmt: str = ".3f") -> str:
    """Renders ``{heading: body}`` sections as Markdown.

    A string body is copied verbatim, a list of dict rows becomes a ``markdown_table``, and a
    ``(headers, list_rows)`` tuple becomes a table with those headers.
    """
    items = sections.items() if isinstance(sections, Mapping) else sections
    parts = [f"# {title}\n"] if title else []
    for heading, body in items:
        if isinstance(body, tuple) and len(body) == 2 and not isinstance(body[0], Mapping):
            text = markdown_table(body[1], headers=body[0], floatfmt=floatfmt)
        elif isinstance(body, (list, tuple)):
            text = markdown_table(body, floatfmt=floatfmt)
        else:
            text = str(body).rstrip()
        parts.append(f"## {heading}\n\n{text}\n")
    return "\n".join(parts)


def write_summary(path: str | os.PathLike, sections: SummarySections, title: str | None = None,
                  floatfmt: str = ".3f") -> Path:
    """Writes ``format_summary(sections, title)`` to ``path`` (e.g. ``RUN_ROOT/summary.md``).

    Args:
        path: the Markdown file; parent directories are created.
        sections: ordered ``{heading: body}`` or ``[(heading, body), ...]``. A body is a string
            (verbatim), a list of dict rows (a table), or ``(headers, list_rows)``.
        title: optional ``#`` title.
        floatfmt: float format for tables.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_summary(sections, title, floatfmt), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# Curves


def _is_loss_key(key: str) -> bool:
    return "loss" in key.lower()


def write_loss_curves(train_jsonl: str | os.PathLike, out_dir: str | os.PathLike,
                      title: str | None = None) -> tuple[Path, Path] | None:
    """Writes ``loss.csv`` and ``loss.png`` (every key containing "loss" vs step) from a train JSONL.

    Uses matplotlib's object API with the Agg canvas, so it never touches the global backend (safe
    in a headless job and inside a notebook alike).

    Returns:
        ``(csv_path, png_path)``, or ``None`` when the log is missing or has no loss-like key.
    """
    train_jsonl = Path(train_jsonl)
    if not train_jsonl.is_file():
        return None
    records = []
    with train_jsonl.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write; the rest of the log is still good
    keys = list(dict.fromkeys(k for r in records for k in r if k not in _RESERVED and _is_loss_key(k)))
    if not keys:
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out_dir / "loss.csv", out_dir / "loss.png"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "epoch", *keys])
        for r in records:
            if any(k in r for k in keys):
                writer.writerow([r.get("step"), r.get("epoch"),
                                 *("" if r.get(k) is None else r[k] for k in keys)])

    # Imported here: matplotlib costs ~0.3 s to import and most processes never plot.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for k in keys:
        pts = [(r["step"], r[k]) for r in records
               if "step" in r and isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=k, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(png_path)
    return csv_path, png_path


# --------------------------------------------------------------------------------------------------
# The run logger


class RunLogger:
    """Writes one run's logs under ``root``; a no-op object on every rank but 0.

    Args:
        root: the run root (created on first write).
        config: dataclass or mapping snapshotted to ``config.json`` right away (``None``: skip; call
            ``save_config`` later).
        rank: this process's global rank; defaults to ``distributed.get_rank()``.
        tensorboard: also write TensorBoard events to ``tb/``.
        report_to: ``None``, ``"wandb"`` or a list containing it, to mirror scalars to W&B.
        wandb_project, wandb_run_name, wandb_mode: forwarded to ``wandb.init``
            (``wandb_mode="offline"`` or env ``WANDB_MODE=offline`` logs without network).
        wandb_kwargs: any other ``wandb.init`` arguments (entity, tags, group...).
        curves_on_close: write ``curves/loss.{csv,png}`` from ``logs/train.jsonl`` in ``close()``.
        resume_step: a resumed run's first step. Records at or after it (logged by the killed process
            after its last checkpoint) are cut from ``logs/*.jsonl`` and TensorBoard is opened with
            ``purge_step`` so its events from that step on are discarded: every step appears once.

    W&B is best effort: if the package is missing or ``wandb.init`` fails (no login, no network) one
    ``RuntimeWarning`` is emitted and local logging carries on.

    Re-opening an existing root appends to the JSONL logs (a resumed run keeps its history) and
    overwrites ``config.json``.
    """

    def __init__(self, root: str | os.PathLike, config: Any = None, *, rank: int | None = None,
                 tensorboard: bool = True, report_to: str | Sequence[str] | None = None,
                 wandb_project: str | None = None, wandb_run_name: str | None = None,
                 wandb_mode: str | None = None, wandb_kwargs: Mapping[str, Any] | None = None,
                 curves_on_close: bool = True, resume_step: int | None = None) -> None:
        self.root = Path(root)
        self.resume_step = None if resume_step is None else int(resume_step)
        self.trimmed: dict[str, int] = {}
        if rank is None:
            # Imported here so markdown/curve helpers do not pull in torch.
            from yolo_common.distributed import get_rank

            rank = get_rank()
        self.rank = int(rank)
        self.active = self.rank == 0
        self.tensorboard = tensorboard
        self.curves_on_close = curves_on_close
        self._files: dict[str, Any] = {}
        self._tb = None
        self._wandb_run = None
        self._wandb_warned = False
        self._closed = False
        if not self.active:
            return
        if self.resume_step is not None:
            extra = sorted(p.stem for p in (self.root / "logs").glob("*.jsonl") if p.stem not in ("train", "eval"))
            self.trimmed = {split: self._trim(split) for split in ("train", "eval", *extra)}
        if config is not None:
            self.save_config(config)
        targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
        if "wandb" in targets:
            self._init_wandb(config, wandb_project, wandb_run_name, wandb_mode, wandb_kwargs or {})

    # ---- paths ---------------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        path = self.root / name
        if self.active:
            path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def train_log_path(self) -> Path:
        return self.root / "logs" / "train.jsonl"

    @property
    def eval_log_path(self) -> Path:
        return self.root / "logs" / "eval.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.md"

    @property
    def tb_dir(self) -> Path:
        """TensorBoard directory (created on rank 0 when accessed)."""
        return self._dir("tb")

    @property
    def curves_dir(self) -> Path:
        """Loss-curve directory (created on rank 0 when accessed)."""
        return self._dir("curves")

    @property
    def checkpoints_dir(self) -> Path:
        """Checkpoint directory (created on rank 0 when accessed; every rank gets the same path)."""
        return self._dir("checkpoints")

    @property
    def onnx_dir(self) -> Path:
        """ONNX export directory (created on rank 0 when accessed)."""
        return self._dir("onnx")

    # ---- writing -------------------------------------------------------------------------------

    def save_config(self, config: Any) -> Path | None:
        """Writes ``config.json`` (dataclasses, Paths, numpy scalars... converted by ``to_jsonable``)."""
        if not self.active:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(to_jsonable(config), indent=2) + "\n", encoding="utf-8")
        return self.config_path

    def _record(self, step: int, epoch: int | float | None, scalars: Mapping[str, Any]) -> dict:
        clash = [k for k in scalars if k in _RESERVED]
        if clash:
            raise ValueError(f"scalar names {clash} are reserved for the log record itself")
        record = {"step": int(step), "epoch": to_jsonable(epoch), "time": time.time()}
        record.update((str(k), to_jsonable(v)) for k, v in scalars.items())
        return record

    def _log_path(self, split: str) -> Path:
        if split == "train":
            return self.train_log_path
        if split == "eval":
            return self.eval_log_path
        return self.root / "logs" / f"{split}.jsonl"

    def _append(self, split: str, record: dict) -> None:
        f = self._files.get(split)
        if f is None:
            path = self._log_path(split)
            path.parent.mkdir(parents=True, exist_ok=True)
            f = self._files[split] = path.open("a", encoding="utf-8")
        f.write(json.dumps(record, allow_nan=False) + "\n")
        f.flush()

    def _log(self, split: str, step: int, epoch: Any, scalars: Mapping[str, Any]) -> dict | None:
        if not self.active:
            return None
        if self._closed:
            raise RuntimeError(f"RunLogger for {self.root} is closed")
        record = self._record(step, epoch, scalars)
        self._append(split, record)
        numbers = {k: v for k, v in record.items()
                   if k not in ("step", "time") and _is_number(v)}
        if self.tensorboard:
            tb = self._writer()
            for k, v in numbers.items():
                tb.add_scalar(f"{split}/{k}", v, record["step"])
        if self._wandb_run is not None:
            self._wandb_log({f"{split}/{k}": v for k, v in numbers.items()}, record["step"])
        return record

    def log_train(self, step: int, epoch: int | float | None = None, **scalars: Any) -> dict | None:
        """Appends one line to ``logs/train.jsonl`` and mirrors numeric scalars to TB/W&B.

        Args:
            step: global optimisation step (the x axis everywhere).
            epoch: epoch, int or fractional.
            **scalars: values (floats, ints, 0-d tensors, numpy scalars; strings go to JSONL only).
                Names that are not identifiers: ``log_train(step, epoch, **{"loss/box": v})``.

        Returns:
            The record written (``None`` on non-zero ranks).
        """
        return self._log("train", step, epoch, scalars)

    def log_eval(self, step: int, epoch: int | float | None = None, **scalars: Any) -> dict | None:
        """Like ``log_train`` but to ``logs/eval.jsonl`` and the ``eval/`` TB/W&B namespace."""
        return self._log("eval", step, epoch, scalars)

    def log_record(self, name: str, step: int, epoch: int | float | None = None, **fields: Any) -> dict | None:
        """Appends one structured record (nested dicts allowed) to ``logs/<name>.jsonl``, JSONL only (no
        TB/W&B): per-layer tables and the like. Trimmed on resume like the train/eval logs."""
        if not name.isidentifier() or name in ("train", "eval"):
            raise ValueError(f"bad record log name {name!r}: an identifier other than train/eval")
        if not self.active:
            return None
        if self._closed:
            raise RuntimeError(f"RunLogger for {self.root} is closed")
        record = self._record(step, epoch, fields)
        self._append(name, record)
        return record

    def tb_writer(self):
        """The run's ``SummaryWriter`` (images, histograms...), or ``None`` on ranks > 0 / without TB."""
        return self._writer() if self.active and self.tensorboard else None

    def _writer(self):
        if self._tb is None:
            # Imported lazily: torch.utils.tensorboard pulls in tensorboard (~1 s) and a writer
            # thread, which rank > 0 and runs without logging should never pay for.
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.tb_dir), flush_secs=30, purge_step=self.resume_step)
        return self._tb

    def _trim(self, split: str) -> int:
        """Drops the records with ``step >= resume_step`` (and a torn last line); returns how many."""
        from yolo_common.checkpoint import atomic_write_bytes

        path = self._log_path(split)
        if not path.is_file():
            return 0
        kept, dropped = [], 0
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                keep = json.loads(line)["step"] < self.resume_step
            except (ValueError, KeyError, TypeError):  # a line cut by the kill
                keep = False
            if keep:
                kept.append(line)
            else:
                dropped += 1
        if dropped:
            atomic_write_bytes(path, "".join(x + "\n" for x in kept).encode("utf-8"))
        return dropped

    def write_curves(self) -> tuple[Path, Path] | None:
        """Writes ``curves/loss.csv`` and ``curves/loss.png`` from ``logs/train.jsonl``."""
        if not self.active:
            return None
        if "train" in self._files:
            self._files["train"].flush()
        if not self.train_log_path.is_file():
            return None
        return write_loss_curves(self.train_log_path, self.curves_dir, title=self.root.name)

    def write_summary(self, sections: SummarySections, title: str | None = None,
                      floatfmt: str = ".3f") -> Path | None:
        """Writes ``summary.md`` in the run root (see the module-level ``write_summary``)."""
        if not self.active:
            return None
        return write_summary(self.summary_path, sections, title, floatfmt)

    # ---- W&B -------------------------------------------------------------------------------------

    def _warn_wandb(self, message: str) -> None:
        if not self._wandb_warned:
            self._wandb_warned = True
            warnings.warn(f"W&B disabled, local logging continues: {message}", RuntimeWarning,
                          stacklevel=4)

    def _init_wandb(self, config: Any, project: str | None, name: str | None, mode: str | None,
                    kwargs: Mapping[str, Any]) -> None:
        try:
            import wandb  # optional extra: pip install yolo-common[wandb]
        except ImportError as e:
            self._warn_wandb(f"the wandb package is not installed ({e}); "
                             f"install the 'wandb' extra to enable it")
            return
        init_kwargs = dict(project=project, name=name, dir=str(self.root),
                           config=to_jsonable(config) if config is not None else None)
        if mode is not None:
            init_kwargs["mode"] = mode  # else wandb reads WANDB_MODE itself
        init_kwargs.update(kwargs)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._wandb_run = wandb.init(**init_kwargs)
        except Exception as e:  # wandb raises many types: UsageError, CommError, timeouts...
            self._warn_wandb(f"wandb.init failed: {type(e).__name__}: {e}")
            self._wandb_run = None

    def _wandb_log(self, data: dict, step: int) -> None:
        try:
            self._wandb_run.log(data, step=step)
        except Exception as e:
            self._warn_wandb(f"wandb log failed: {type(e).__name__}: {e}")
            self._wandb_run = None

    # ---- lifetime --------------------------------------------------------------------------------

    def flush(self) -> None:
        """Flushes the JSONL files and TensorBoard (e.g. before reading them from another process)."""
        for f in self._files.values():
            f.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Writes the curves (if ``curves_on_close``), closes files/TB and finishes W&B. Idempotent."""
        if self._closed or not self.active:
            self._closed = True
            return
        try:
            if self.curves_on_close:
                self.write_curves()
        finally:
            self._closed = True
            for f in self._files.values():
                f.close()
            self._files.clear()
            if self._tb is not None:
                self._tb.close()
                self._tb = None
            if self._wandb_run is not None:
                with contextlib.suppress(Exception):
                    self._wandb_run.finish()
                self._wandb_run = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

