"""TensorBoard's writer: one run per trial (DIR/<trial id>), per-epoch scalars under fmlab's metric names
and the trial's factors, seed and final metrics through the HParams plugin.

Every run carries the same experiment config (the factors' levels as discrete domains, the metrics); the
HParams plugin takes any one of them. Final metrics are scalars tagged final/<metric> at the best epoch's
step: final/val_* are the selected epoch's, which the last per-epoch val_* need not be. Which trials a board
holds, and writing them from the store, is fmlab.report.tensorboard's.

Needs the tensorboard package (the extra fmlab[tensorboard]), imported on first use.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fmlab.config.metrics import EPOCH_COLS, METRICS
from fmlab.config.states import State
from fmlab.errors import FmlabError

FINAL = "final/"
LIVE_METRICS = ("val_loss", "val_acc")  # the latest epoch's, so running trials show in the HParams view too
INSTALL = "TensorBoard output needs the tensorboard package: pip install 'fmlab[tensorboard]'"


def require() -> None:
    """Fail early, in one line, when tensorboard (or torch's writer for it) is missing."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise FmlabError(INSTALL) from None


def _hparam_value(v: Any) -> bool | float | str:
    if isinstance(v, bool | str):
        return v
    if isinstance(v, int | float):
        return float(v)
    return str(v)  # lists (widths) and None: shown as text


def _summary(tag: str, **data: Any) -> Any:
    """An HParams plugin summary (experiment, session_start_info or session_end_info), built as
    tensorboard.plugins.hparams.summary does, but on TensorBoard's own protos: that module needs TensorFlow."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    md = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(**data))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=md, tensor=metadata.NULL_TENSOR)])


def _infos(domains: Mapping[str, list[Any]]) -> tuple[list[Any], list[Any]]:
    """HParamInfo per factor (a discrete domain when its levels share a type) and MetricInfo per metric."""
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2

    kinds = {bool: api_pb2.DATA_TYPE_BOOL, float: api_pb2.DATA_TYPE_FLOAT64, str: api_pb2.DATA_TYPE_STRING}
    hps = []
    for name, levels in domains.items():
        vals = [_hparam_value(v) for v in levels]
        types = {type(v) for v in vals}
        info = api_pb2.HParamInfo(name=name)
        if len(types) == 1:
            t = types.pop()
            info.type = kinds[t]
            lv = struct_pb2.ListValue()
            lv.extend(vals)
            info.domain_discrete.CopyFrom(lv)
        hps.append(info)
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=FINAL + m), display_name=f"{m} (final)") for m in METRICS]
    metrics += [
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m), display_name=f"{m} (latest epoch)") for m in LIVE_METRICS
    ]
    return hps, metrics


class Board:
    """One SummaryWriter per trial, opened on the trial's first event, closed when it ends.

    trials: id -> hparams ({factor: value, ..., "seed": s}); domains: factor -> levels (and "seed")."""

    def __init__(
        self,
        logdir: str | Path,
        trials: Mapping[str, Mapping[str, Any]],
        domains: Mapping[str, list[Any]],
        description: str = "",
    ) -> None:
        require()
        self.logdir = Path(logdir)
        self.trials = {k: dict(v) for k, v in trials.items()}
        self.domains = dict(domains)
        self.description = description
        self.writers: dict[str, Any] = {}
        self.written: dict[str, set[int]] = {}  # trial -> epochs written by this process
        self.had_events: dict[str, bool] = {}  # trial -> its run held event files before we opened it
        self.error: str | None = None  # the first write error; after it the board writes nothing more

    def run_dir(self, tid: str) -> Path:
        return self.logdir / tid

    def has_run(self, tid: str) -> bool:
        return any(self.run_dir(tid).glob("events.out.tfevents.*"))

    def _drop(self, tid: str) -> None:
        for f in self.run_dir(tid).glob("events.out.tfevents.*"):
            f.unlink()

    def _open(self, tid: str, start_s: float | None = None) -> Any:
        w = self.writers.get(tid)
        if w is not None:
            return w
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
        from torch.utils.tensorboard import SummaryWriter

        self.had_events[tid] = self.has_run(tid)
        w = SummaryWriter(log_dir=str(self.run_dir(tid)), flush_secs=5)
        now = start_s or time.time()
        hps, metrics = _infos(self.domains)
        fw = w.file_writer
        exp = api_pb2.Experiment(
            description=self.description, time_created_secs=now, hparam_infos=hps, metric_infos=metrics
        )
        fw.add_summary(_summary(metadata.EXPERIMENT_TAG, experiment=exp))
        ssi = plugin_data_pb2.SessionStartInfo(start_time_secs=now)
        for k, v in self.trials.get(tid, {}).items():
            x = _hparam_value(v)
            field = "bool_value" if isinstance(x, bool) else "string_value" if isinstance(x, str) else "number_value"
            setattr(ssi.hparams[k], field, x)
        fw.add_summary(_summary(metadata.SESSION_START_INFO_TAG, session_start_info=ssi))
        self.writers[tid] = w
        self.written.setdefault(tid, set())
        return w

    def epoch(self, tid: str, row: Mapping[str, Any], walltime: float | None = None) -> None:
        w = self._open(tid)
        e = int(row["epoch"])
        for tag in EPOCH_COLS:
            if row.get(tag) is not None:
                w.add_scalar(tag, float(row[tag]), global_step=e, walltime=walltime)
        self.written[tid].add(e)
        w.flush()  # live curves: the epoch shows as soon as it is recorded

    def finish(
        self,
        tid: str,
        *,
        ok: bool,
        metrics: Mapping[str, Any] | None = None,
        best_epoch: int | None = None,
        epochs: Iterable[Mapping[str, Any]] = (),
        resumed_from: int = 0,
        end_s: float | None = None,
    ) -> None:
        """A trial's end: epoch rows not yet written (skipping those an earlier sweep's resumed run wrote),
        the final metrics, and the session's end status."""
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        w = self._open(tid)
        for row in epochs:
            e = int(row["epoch"])
            if e not in self.written[tid] and not (self.had_events[tid] and e <= resumed_from):
                self.epoch(tid, row)
        step = int(best_epoch or max(self.written[tid], default=0))
        for m in METRICS:
            if metrics and metrics.get(m) is not None:
                w.add_scalar(FINAL + m, float(metrics[m]), global_step=step, walltime=end_s)
        status = api_pb2.STATUS_SUCCESS if ok else api_pb2.STATUS_FAILURE
        sei = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=end_s or time.time())
        w.file_writer.add_summary(_summary(metadata.SESSION_END_INFO_TAG, session_end_info=sei))
        w.close()
        del self.writers[tid]

    def record(self, ev: Any) -> None:
        """The sweep's hook: one executor Event (epoch, done, failed) after the store has written it.
        A TensorBoard write error never stops a sweep: the first one is kept in .error, then nothing is written."""
        if self.error is not None:
            return
        try:
            if ev.kind == "epoch":
                if ev.trial_id not in self.writers and int(ev.row["epoch"]) == 1:
                    self._drop(ev.trial_id)  # a fresh start (--retry-failed, no resume state): old run is stale
                self.epoch(ev.trial_id, ev.row)
            elif ev.kind == "done":
                r = ev.result
                self.finish(
                    ev.trial_id,
                    ok=True,
                    metrics=r.metrics,
                    best_epoch=r.best_epoch,
                    epochs=r.epochs,
                    resumed_from=ev.resumed_from,
                )
            elif ev.kind == "failed":
                self.finish(ev.trial_id, ok=False, resumed_from=ev.resumed_from)
        except Exception as e:  # noqa: BLE001 - the store is the record; TensorBoard is a view of it
            self.error = f"{self.logdir}: {type(e).__name__}: {e}"
            self.close()

    def write_record(self, rec: Mapping[str, Any], epochs: list[Mapping[str, Any]], *, replace: bool) -> None:
        """A trial from the store: its epochs (wall times rebuilt from its start and epoch_s), and, when it
        has ended, its final metrics. replace: drop the run's earlier event files first (idempotent)."""
        tid = rec["id"]
        if replace:
            self._drop(tid)
        start = rec.get("started") or time.time()
        self._open(tid, start_s=start)
        t = start
        for row in sorted(epochs, key=lambda r: r["epoch"]):
            t += float(row.get("epoch_s") or 0.0)
            self.epoch(tid, row, walltime=t)
        if rec["state"] in (State.COMPLETE, State.FAILED):
            self.finish(
                tid,
                ok=rec["state"] == State.COMPLETE,
                metrics=rec.get("metrics"),
                best_epoch=rec.get("best_epoch"),
                end_s=rec.get("finished") or t,
            )
        else:
            self.writers.pop(tid).close()

    def close(self) -> None:
        for w in self.writers.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - closing after a write error
                pass
        self.writers.clear()
