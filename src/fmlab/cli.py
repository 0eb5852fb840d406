"""The `fmlab` command: argparse subcommands over the library. The only module that prints.

Human output goes to stderr (progress) and stdout (tables); with --format json, stdout holds JSON
only. Errors a user can fix are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import FmlabError
from .progress import fmt_secs as _fmt_secs


def err(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def out_json(obj: Any) -> None:
    print(json.dumps(obj, allow_nan=False), flush=True)


# ---------------------------------------------------------------- data


def cmd_data_check(args: argparse.Namespace) -> int:
    from . import data

    rep = data.check(args.data_dir)
    if args.format == "json":
        out_json(rep)
    else:
        for f in rep["files"]:
            ok = "OK" if f["sha256_ok"] and f["count_ok"] else "MISMATCH"
            print(f"{ok:8} {f['name']:26} {f['count']:6} items  sha256 {f['sha256'][:16]}…  {f['path']}")
            if "per_class" in f:
                print("         per class: " + ", ".join(f"{c} {n}" for c, n in f["per_class"].items()))
    if not rep["ok"]:
        err(f"fmlab: error: some files do not match upstream (see above); {data.FIX}")
        return 1
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from . import data

    paths = data.fetch(args.url, args.dest)
    for p in paths:
        err(f"wrote {p}")
    return 0


# ---------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from . import api, config

    cfg = api.make_config(config.parse_sets(args.set))
    api.check_device(args.device)  # a missing GPU is one line before anything is printed or loaded
    tid = cfg.trial_id()
    out = Path(args.out) if args.out else api.default_train_dir(cfg)
    t0 = time.perf_counter()
    max_epochs = cfg.train.max_epochs
    err(f"trial {tid}: {cfg.model.arch} net, {cfg.train.optimizer} lr {cfg.train.lr}, batch {cfg.train.batch_size}, "
        f"up to {max_epochs} epochs, early stopping on {cfg.train.monitor} (patience {cfg.train.patience})")

    def progress(row: dict[str, float]) -> None:
        elapsed = time.perf_counter() - t0
        eta = row["epoch_s"] * (max_epochs - row["epoch"])
        err(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%  "
            f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%  {row['epoch_s']:.1f}s  "
            f"elapsed {_fmt_secs(elapsed)}  ETA <= {_fmt_secs(eta)}")  # fmt: skip

    res = api.train_trial(cfg, out=out, device=args.device, threads=args.threads, data_dir=args.data_dir,
                          on_epoch=progress).result  # fmt: skip
    m = res.metrics
    err(f"best epoch {res.best_epoch} ({res.stop_reason}): val acc {100 * m['val_acc']:.2f}%, "
        f"test acc {100 * m['test_acc']:.2f}%  ->  {out}")  # fmt: skip
    out_json({"trial_id": tid, "out": str(out), "best_epoch": res.best_epoch, "epochs": len(res.epochs),
              **m, **res.timings, "n_params": res.n_params})  # fmt: skip
    return 0


def cmd_speedrun(args: argparse.Namespace) -> int:
    from . import speedrun
    from .study import parse_seeds

    spec = speedrun.load(args.file)
    names = args.recipe or list(spec.recipes)
    for n in names:
        if n not in spec.recipes:
            raise FmlabError(f"{spec.path}: no recipe '{n}'; recipes: {', '.join(spec.recipes)}")
    seeds = parse_seeds(args.seeds) if args.seeds else spec.seeds
    log = Path(args.log)
    err(f"speedrun {spec.name}: recipes {', '.join(names)}, seeds {list(seeds)}, one process per run; log {log}")

    def progress(r: dict[str, Any]) -> None:
        err(f"  {r['recipe']} seed {r['seed']}: test acc {100 * r['test_acc']:.2f}%  wall {r['wall_s']:.1f}s "
            f"(train {r['train_s']:.1f}s, val {r['eval_s']:.1f}s, {r['epochs']} epochs)")  # fmt: skip

    sums = speedrun.run(spec, names, seeds, log, args.threads, args.data_dir, on_run=progress)
    rows = []
    for s in sums:
        ci = f"[{100 * s['test_acc_lo']:5.2f}, {100 * s['test_acc_hi']:5.2f}]" if s["n"] > 1 else "[n=1: no CI]"
        rows.append([s["recipe"], str(s["n"]), f"{100 * s['test_acc_mean']:.2f}% {ci}", f"{100 * s['target_acc']:.1f}%",
                     f"{s['wall_s_median']:.1f}", f"{s['wall_s_max']:.1f}", f"{s['target_s']:.0f}s",
                     "yes" if s["met"] else "no"])  # fmt: skip
    print_table(["recipe", "n", "test acc mean [95% CI]", "target", "wall s median", "max", "target", "met"], rows,
                right=(1, 2, 3, 4, 5, 6))  # fmt: skip
    out_json({"speedrun": spec.name, "seeds": list(seeds), "recipes": sums})
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from . import benchtrain
    from .study import parse_seeds

    if args.peak_repeats < 1:
        raise FmlabError(f"bad --peak-repeats {args.peak_repeats}; expected a positive count, e.g. 20")
    o = benchtrain.BenchTrainOptions(
        sets=tuple(args.set), epochs=args.epochs, batch_size=args.batch_size, train_subset=args.train_subset,
        seeds=tuple(parse_seeds(args.seeds)), repeats=args.repeats, threads=args.threads,
        conv_workers=args.conv_workers, data_dir=args.data_dir, script=args.script,
        peak_sizes=_positive_ints(args.peak_sizes, "--peak-sizes"), peak_repeats=args.peak_repeats)  # fmt: skip
    pairs = o.repeats or len(o.seeds)
    err(f"bench-train: {pairs} pair(s) of runs (conventional, then fmlab), {o.epochs} epoch(s), batch "
        f"{o.batch_size}, seeds {list(o.seeds)}" + (f", sets {list(o.sets)}" if o.sets else ""))  # fmt: skip

    def progress(r: dict[str, Any]) -> None:
        err(f"  pair {r['pair']} seed {r['seed']} {r['side']:12} pid {r['pid']}: {r['train_images_per_s']:8.0f} img/s "
            f"train {r['train_s']:.1f}s eval {r['eval_s']:.1f}s wall {r['wall_s']:.1f}s "
            f"test acc {100 * r['test_acc']:.2f}%")  # fmt: skip

    rep = benchtrain.bench_train(o, on_run=progress)
    n_img = rep["train_images"]
    print(f"{'side':13} {'img/s (median)':>15} {'runs':>24} {'wall s':>7} {'GFLOP/s':>8} {'of peak':>8} "
          f"{'test acc (mean ± std, n)':>26}")  # fmt: skip
    for side in ("conventional", "fmlab"):
        d = rep[side]
        a = d["test_acc"]
        runs = ",".join(f"{x:.0f}" for x in d["train_images_per_s_all"])
        print(f"{side:13} {d['train_images_per_s']:15,.0f} {runs:>24} {d['wall_s']:7.1f} {d['gflops']:8.2f} "
              f"{100 * d['peak_fraction']:7.1f}% {100 * a['mean']:12.2f}% ± {100 * a['std']:.2f} (n={a['n']})")
    g = rep["acc_gap"]
    peaks = "; ".join(f"{p['dtype']} {p['gflops']:.1f} GFLOP/s (" + ", ".join(f"{k} {v:.0f}" for k, v in
                      p["by_kernel"].items()) + ")" for p in rep["peaks"].values())  # fmt: skip
    print(f"speedup (fmlab / conventional median img/s): {rep['speedup']:.2f}x;  test acc gap fmlab - conventional: "
          f"{100 * g['mean']:+.2f} ± {100 * g['std']:.2f} pts (paired by seed, n={g['n']})")
    print(f"{n_img:,} training images x {rep['epochs']} epoch(s), batch {rep['batch_size']}, {rep['threads']} "
          f"thread(s), fmlab precision {rep['precision']} (conventional fp32); forward "
          f"{rep['forward_flops_per_image'] / 1e6:.2f} MFLOP/image, training counted as 3x; GEMM peaks "
          f"(best n x n product, packed oneDNN Linear or torch.mm, this run): {peaks}")  # fmt: skip
    print(f"at 100% of the {rep['peak_dtype']} peak fmlab would train {rep['fmlab_images_per_s_at_peak']:,.0f} img/s: "
          f"{rep['speedup_bound']:.2f}x the conventional loop, the bound on the speedup")  # fmt: skip
    print(f"img/s covers the training loop of every epoch (evaluation excluded); wall = whole process. "
          f"Order: {' '.join('c' if s == 'conventional' else 'f' for s in rep['order'])}")  # fmt: skip
    if rep["loadavg_start"][0] > 0.5:  # at the end the 1-min average holds this benchmark's own threads
        print(f"note: load average {rep['loadavg_start'][0]:.1f} at the start on {rep['cores']} cores: other jobs may "
              "have been running (a job that just ended still counts in the 1-min average); rerun on a quiet machine")
    out_json(rep)
    return 0


# ---------------------------------------------------------------- report


def print_report_summary(rep: dict[str, Any], fmt: str = "table") -> None:
    """The terminal view of build_report's dict: JSON on stdout, or plain lines that fit 80 columns."""
    if fmt == "json":
        out_json(rep)
        return
    from rich.console import Console
    from rich.markup import escape

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:  # rich exits 1 here; main() ends a closed pipe quietly with 0
            raise BrokenPipeError

    con = PipeConsole()
    c = rep["counts"]
    con.print(f"[bold]{rep['label']}[/bold]: {c['complete']} of {c['planned']} planned trials complete, "
              f"{c['failed']} failed, {c['waiting'] + c['running']} unfinished, {c['missing']} missing; "
              f"{c['seeds']} seed(s)")  # fmt: skip
    for w in rep["warnings"]:
        con.print(f"[yellow]! {w}[/yellow]", markup=True, highlight=False)
    for f in rep["findings"]:  # the answer first: the best set, then the effects by verdict
        con.print(f"- {escape(f)}", highlight=False)
    for cl in rep.get("claims", []):
        con.print(f"claim: {escape(cl['text'])}: [bold]{cl['verdict']}[/bold] ({escape(cl['why'])})", highlight=False)
    what = "arms" if rep.get("design") == "arms" else "top cells"
    vs = "each arm vs the baseline" if rep.get("design") == "arms" else "effects"
    # plain lines, one per cell and per effect: an 80-column log reads them (a 7-column table would squeeze
    # the cell names and terms into fragments); markup is escaped ("[0.1, 0.3]" is text)
    con.print(f"[bold]{what} by {rep['select']} (mean [95% CI])[/bold]")
    head = rep["cells_table"]["header"]
    for r in rep["cells_table"]["rows"]:
        rest = ", ".join(f"{h} {v}" for h, v in zip(head[2:], r[2:], strict=True))
        con.print(f"{escape(r[0])}. {escape(r[1])}: {escape(rest)}", highlight=False)
    con.print(f"[bold]{vs}, contrasts of the fitted model (Holm-adjusted p)[/bold]")
    head = rep["effects_table"]["header"]
    for r in rep["effects_table"]["rows"]:
        rest = ", ".join(f"{h} {v}" for h, v in zip(head[1:-1], r[1:-1], strict=True))
        con.print(f"- {escape(r[0])}: {escape(rest)}: [bold]{escape(r[-1])}[/bold]", highlight=False)
    con.print(f"report: {rep['index']}\nhiplot: {rep['hiplot']}\nsummary: {rep['summary_md']}", highlight=False)


def cmd_report(args: argparse.Namespace) -> int:
    """A study's report from the store: reports/<study>/ (reports/<study>-<budget>/ for other budgets)."""
    from . import api

    rep = api.open_store(_store_path(args)).study(args.study, args.budget).report(args.out)
    print_report_summary(rep, args.format)
    return 0


# ---------------------------------------------------------------- studies: sweep, ls, show, results


def _store_path(args: argparse.Namespace) -> Path:
    from .store import DEFAULT_PATH

    return Path(args.store) if args.store else DEFAULT_PATH


def _sweep_head(p: Any, study_file: str) -> str:
    """The plan's first line: study, budget, cells x seeds = trials, store."""
    st, n = p.study, len(p.trials)
    label = f" [{st.label}]" if st.budget != "full" else ""
    cells = f"baseline + {len(st.arms)} arms" if st.arms else f"{len(st.cells())} cells"
    shared = len(st.cells()) * len(st.seeds) - n
    return (f"study {st.name} ({study_file}), budget {st.budget}{label}: {cells} x {len(st.seeds)} seeds = {n} trials"
            + (f" ({shared} shared by arms that resolve alike)" if shared else "") + f"; store {p.store}")


def _print_dry_run(p: Any, args: argparse.Namespace) -> None:
    n_done, n_failed, n_run = (len(p.plan.done), len(p.plan.failed), len(p.plan.running)) if p.plan else (0, 0, 0)
    lo = p.layout
    print(_sweep_head(p, args.study_file))
    print(f"to run: {len(p.todo)}, already COMPLETE: {n_done}, FAILED: {n_failed}"
          + ("" if args.retry_failed or not n_failed else " (skipped; --retry-failed reruns them)")
          + (f", RUNNING in another sweep: {n_run}" if n_run else ""))  # fmt: skip
    print(f"estimated time: <= {_fmt_secs(p.estimate_s)} on {lo.where}, {lo.threads} thread(s) each "
          f"(upper bound, every trial to max_epochs; speed {'from this store' if p.calibrated else 'assumed'})")
    power_line = p.power_line()
    if power_line:
        print(power_line)
    for t in p.todo:
        print(f"  {t.id}  seed {t.seed}  {_cell_text(t.cell)}")


def _print_start(p: Any, args: argparse.Namespace) -> None:
    pl, lo = p.plan, p.layout
    err(_sweep_head(p, args.study_file))
    err(f"to run: {len(pl.todo)} on {lo.where}, {lo.threads} thread(s) each; already COMPLETE: {len(pl.done)}; "
        f"FAILED: {len(pl.failed)}" + (" (skipped; --retry-failed reruns them)" if pl.failed else "")
        + (f"; recovered from a dead sweep: {len(pl.recovered)}" if pl.recovered else "")
        + f"; estimate <= {_fmt_secs(p.estimate_s)}")  # fmt: skip


def _print_interrupted(live: Any) -> None:
    if live is not None:  # a last page that no longer reloads: nothing rewrites it now
        try:
            live.finish(test_pass=False)
        except Exception as e:
            err(f"fmlab: the last report page could not be written: {e}")
    err("fmlab: interrupted; running trials were given back and resume from their last epoch on the next run")


def _print_outcome(o: Any, p: Any, args: argparse.Namespace, live: Any) -> None:
    st, tb = p.study, args.tensorboard
    label = f" [{st.label}]" if st.budget != "full" else ""
    if tb:
        err(f"TensorBoard: tensorboard --logdir {tb}" if o.board_error is None
            else f"fmlab: TensorBoard output stopped ({o.board_error}); the store has every result; rewrite the "
                 f"runs with fmlab results {st.name} --budget {st.budget} --tensorboard {tb}")  # fmt: skip
    if live is not None:
        from .env import cores

        s = live.stats()
        rep = live.finish()
        share = 100 * s["thread_cpu_s"] / max(o.wall_s * cores(), 1e-9)
        err(f"live report: {s['rewrites']} rewrite(s), {s['rewrite_s']:.1f}s wall, {s['thread_cpu_s']:.1f}s CPU in "
            f"the sweep's parent ({share:.1f}% of {cores()} core(s) x the sweep's {o.wall_s:.0f}s); final report "
            f"with the test-set pass {rep['final_s']:.1f}s: {rep['index']}"
            + (f"; {len(s['errors'])} rewrite(s) failed, last: {s['errors'][-1]}" if s["errors"] else ""))
    done, failed = o.in_state("COMPLETE"), o.in_state("FAILED")
    err(f"{st.name} ({st.budget}{label}): {len(done)}/{len(o.records)} COMPLETE ({o.progress.ran} run now), "
        f"{len(failed)} FAILED, wall {_fmt_secs(o.wall_s)}")  # fmt: skip
    if o.best is not None:
        m = o.best["metrics"]
        err(f"best trial by {st.select}: {o.best['id']} val acc {m['val_acc']:.4f} val loss {m['val_loss']:.4f} "
            f"(test acc {m['test_acc']:.4f}){label}")  # fmt: skip
    for r in failed:
        err(f"FAILED {r['id']}: {r['error']}  (fmlab show {r['id']}; rerun with --retry-failed)")


def cmd_sweep(args: argparse.Namespace) -> int:
    import signal

    from . import api
    from .progress import SweepDisplay
    from .study import parse_seeds

    if args.report_every < 0:
        raise FmlabError(f"bad --report-every {args.report_every:g}; give seconds between rewrites, e.g. 60")
    common = dict(seeds=parse_seeds(args.seeds) if args.seeds else None, workers=args.workers, threads=args.threads,
                  store=_store_path(args), retry_failed=args.retry_failed, executor=args.executor,
                  address=args.address, cpus_per_trial=args.cpus_per_trial)  # fmt: skip
    if args.dry_run:
        _print_dry_run(api.plan_sweep(args.study_file, args.budget, **common), args)
        return 0
    with api.open_sweep(args.study_file, args.budget, **common, device=args.device, data_dir=args.data_dir,
                        gpus_per_trial=args.gpus_per_trial, tensorboard=args.tensorboard) as sw:  # fmt: skip
        p = sw.plan
        _print_start(p, args)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        disp = SweepDisplay(f"{p.study.name} ({p.study.label})", live=sys.stderr.isatty() and not args.plain)
        live = _live_report(args, p.store, p.study)
        try:
            outcome = sw.run(disp.update)
        except KeyboardInterrupt:
            disp.close()
            _print_interrupted(live)
            return 130
        finally:
            disp.close()
            if live is not None:
                live.stop()
        _print_outcome(outcome, p, args, live)
        return 1 if outcome.in_state("FAILED") else 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _live_report(args: argparse.Namespace, path: Path, st: Any) -> Any:
    """--report-every: the report rewritten while the sweep runs (fmlab.livereport), started; else None."""
    if not args.report_every:
        return None
    from . import api
    from .livereport import LiveReport

    out = api.StudyHandle(api.StoreHandle(path), st.name, st.budget).default_report_dir()
    err(f"live report: {out / 'index.html'}, rewritten every {args.report_every:g}s while the sweep runs")
    return LiveReport(path, st.name, st.budget, out, args.report_every).__enter__()


def cmd_watch(args: argparse.Namespace) -> int:
    from .watch import watch

    if args.every <= 0:
        raise FmlabError(f"bad --every {args.every:g}; give seconds between refreshes, e.g. 2")
    return watch(_store_path(args), args.study, args.budget, args.every)


def _cell_text(cell: dict[str, Any]) -> str:
    """'pool=max batch_size=64', or for an arm shared with others 'arm=bn also=bn_bias'."""
    return " ".join(f"{k.split('.')[-1]}={','.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in cell.items())  # fmt: skip


def _metric(r: dict, k: str) -> str:
    v = r["metrics"].get(k)
    return "" if v is None else f"{v:.4f}"


def print_table(header: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> None:
    """The one plain-text table every listing prints: columns padded to their widest cell, two spaces
    apart; the columns in right (numbers) right-aligned. Plain text, so a log or a pipe reads the same."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                         enumerate(zip(cells, widths, strict=True))).rstrip()  # fmt: skip

    print(line(header))
    for r in rows:
        print(line(r))


def cmd_ls(args: argparse.Namespace) -> int:
    from . import api

    recs = api.open_store(_store_path(args)).records(args.study, args.budget, args.state)
    if args.format == "json":
        out_json(recs)
        return 0
    cols = ["id", "study", "budget", "state", "seed", "cell", "val_acc", "val_loss", "test_acc", "best_epoch", "time"]
    rows = [[r["id"], r["study"] or "", r["label"] or "", r["state"], str(r["seed"]),
             _cell_text(r["cell"]),
             _metric(r, "val_acc"), _metric(r, "val_loss"), _metric(r, "test_acc"),
             str(r["best_epoch"] or ""), _fmt_secs(r["timings"]["total_s"]) if r["timings"] else ""]
            for r in recs]  # fmt: skip
    print_table(cols, rows)
    err(f"{len(recs)} trial(s)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from . import api

    rec = api.open_store(_store_path(args)).trial(args.trial)
    if args.format == "json":
        out_json(rec)
        return 0
    print(f"trial {rec['id']}  {rec['state']}  seed {rec['seed']}  attempts {rec['attempts']}")
    for s in rec["studies"]:
        print(f"  study {s['study']} ({s['budget']})")
    if rec["cell"]:
        print("  " + " ".join(f"{k}={v}" for k, v in rec["cell"].items()))
    if rec["metrics"]:
        print("  " + "  ".join(f"{k} {v:.4f}" for k, v in rec["metrics"].items())
              + f"  best epoch {rec['best_epoch']} ({rec['stop_reason']})")  # fmt: skip
    if rec["checkpoint"]:
        print(f"  checkpoint {rec['checkpoint']}")
    if rec["owner"]:
        print(f"  running on {rec['owner']}")
    if rec["epochs"]:
        print("  epoch  lr        train_loss  train_acc  val_loss  val_acc  epoch_s")
        for e in rec["epochs"]:
            print(f"  {e['epoch']:5d}  {e['lr']:.2e}  {e['train_loss']:10.4f}  {e['train_acc']:9.4f}  "
                  f"{e['val_loss']:8.4f}  {e['val_acc']:7.4f}  {e['epoch_s']:7.1f}")  # fmt: skip
    if rec["error"]:
        print(f"  error: {rec['error']}")
    if rec["traceback"]:
        print(rec["traceback"].rstrip())
    if rec["log"]:
        print("log:\n" + rec["log"].rstrip())
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from . import api

    if not args.out and not args.tensorboard:
        raise FmlabError("fmlab results: give --out DIR (tables), --tensorboard DIR, or both")
    h = api.open_store(_store_path(args)).study(args.study, args.budget)
    if args.tensorboard:
        ids = h.tensorboard(args.tensorboard)
        err(f"wrote {len(ids)} TensorBoard run(s) to {args.tensorboard}; view: tensorboard --logdir {args.tensorboard}")
    for p in h.export(args.out, args.as_) if args.out else []:
        err(f"wrote {p}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    import shlex

    from . import publish
    from .study import parse_seeds

    seeds = parse_seeds(args.seeds) if args.seeds else None
    argv = ["fmlab", "publish", publish.shown_path(args.study_file), "--budget", args.budget]
    argv += ["--seeds", args.seeds] if args.seeds else []
    argv += ["--store", publish.shown_path(args.store)] if args.store else []
    argv += ["--out", publish.shown_path(args.out)] if args.out else []
    run = publish.publish_results(args.study_file, args.budget, store=_store_path(args), out=args.out, seeds=seeds,
                              command=shlex.join(argv))  # fmt: skip
    c = run["counts"]
    err(f"wrote {run['out']}: {c['complete']} of {c['planned']} planned trials COMPLETE, {c['failed']} FAILED, "
        f"{c['missing']} missing; best {run['best'] or 'none yet'}")  # fmt: skip
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .publish import import_results

    r = import_results(args.folder, store=_store_path(args))
    failed = f", {r['failed']} FAILED" if r["failed"] else ""
    err(f"{r['study']} ({r['budget']}): imported {r['imported']} COMPLETE trial(s){failed}, {r['already']} already in "
        f"{_store_path(args)}; {r['planned']} planned; best checkpoint {r['best'] or 'none'}")  # fmt: skip
    return 0


# ---------------------------------------------------------------- inference


def cmd_params(args: argparse.Namespace) -> int:
    from . import infer

    rep = infer.param_table(infer.load(args.ckpt, args.store))
    if args.format == "json":
        out_json(rep)
        return 0
    rows = [[r["layer"], r["type"], ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in r["shapes"].items()),
             f"{r['params']:,}"] for r in rep["layers"]]  # fmt: skip
    print_table(["layer", "type", "shapes", "params"], [*rows, ["total", "", "", f"{rep['total']:,}"]], right=(3,))
    print(f"size: {rep['fp32_mb']:.3f} MB as fp32, {rep['disk_mb']:.3f} MB on disk ({rep['disk_bytes']:,} bytes, "
          f"{Path(rep['checkpoint']) / 'best.safetensors'}); MB = 10^6 bytes")
    return 0


def _positive_ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        xs = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise FmlabError(f"bad {flag} {text!r}; expected positive integers, e.g. 256,1024") from None
    if not xs or min(xs) < 1:
        raise FmlabError(f"bad {flag} {text!r}; expected positive integers, e.g. 256,1024")
    return xs


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench, infer

    ld = infer.load(args.ckpt, args.store)
    runtimes = tuple(args.runtimes.split(",")) if args.runtimes else bench.DEFAULT_RUNTIMES
    bench.check_runtimes(runtimes)
    batches = _positive_ints(args.batches, "--batches")
    err(f"benchmarking {ld.ckpt_dir} on {', '.join(runtimes)}: {args.runs} batch-1 runs, batches {batches} ...")
    rep = bench.bench(ld, threads=args.threads, latency_threads=args.latency_threads, runs=args.runs,
                      batches=batches, repeats=args.repeats, runtimes=runtimes, data_dir=args.data_dir)  # fmt: skip
    bs = [str(b) for b in batches]
    rows = [[r["runtime"], f"{r['latency']['p50_ms']:.3f}", f"{r['latency']['p99_ms']:.3f}",
             *(f"{r['images_per_s'][b]:,.0f}" for b in bs), f"{100 * r['test_acc']:.2f}%", f"{r['prep_s']:.1f}"]
            for r in rep["results"]]  # fmt: skip
    print_table(["runtime", "p50 ms", "p99 ms", *(f"img/s @{b}" for b in bs), "test acc", "prep s"], rows,
                right=tuple(range(1, len(bs) + 5)))  # fmt: skip
    print(f"batch 1 on {rep['latency_threads']} thread(s), batches on {rep['threads']}; latency = one call "
          f"(ORT: session.run incl. input binding), p50/p99 of {rep['runs']} after warm-up; img/s = batch / "
          f"median of {rep['repeats']} calls; prep = trace/compile/session time, not in latency")  # fmt: skip
    out_json(rep)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import infer, onnx_export

    ld = infer.load(args.ckpt, args.store)
    err(f"exporting {ld.ckpt_dir} to {args.onnx}{' (int8)' if args.int8 else ''} ...")
    rep = onnx_export.export(ld, args.onnx, int8=args.int8, calib_n=args.calib, data_dir=args.data_dir)
    for kind in ("fp32", "int8"):
        if kind in rep:
            p = rep[kind]
            err(f"{kind}: test acc {100 * p['test_acc']:.2f}% (torch {100 * rep['torch_test_acc']:.2f}%), "
                f"argmax agreement with torch {100 * p['argmax_agreement']:.2f}%, "
                f"max |log-prob diff| {p['max_abs_diff']:.2e}, {p['size_mb']:.3f} MB")  # fmt: skip
    if args.int8:
        err(f"int8 accuracy drop vs fp32: {rep['int8_acc_drop_pts']:+.2f} pts "
            f"(calibrated on {rep['int8']['calibration_images']} training images)")  # fmt: skip
    err(f"wrote {rep['out']} (checked with onnx.checker; classes and normalisation in metadata_props)")
    out_json(rep)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from . import infer

    ld = infer.load(args.ckpt, args.store)
    preds = infer.predict(ld, args.images, top=args.top)
    if args.format == "json":
        out_json(preds)
        return 0
    for p in preds:
        tops = "  ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in p["top"])
        print(f"{p['file']}: {tops}")
    return 0


# ---------------------------------------------------------------- parser


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    p.add_argument("--data-dir", help="folder with the IDX files (default: $FMLAB_DATA, then system paths)")


def build_parser() -> argparse.ArgumentParser:
    from .store import DEFAULT_PATH  # the one default store path (also the API's)

    store_help = f"the SQLite store (default {DEFAULT_PATH})"
    # options shared by many commands, declared once (argparse parents)
    STORE = argparse.ArgumentParser(add_help=False)
    STORE.add_argument("--store", help=store_help)
    FORMAT = argparse.ArgumentParser(add_help=False)
    FORMAT.add_argument("--format", choices=["table", "json"], default="table", help="table (default) or json")
    DATA = argparse.ArgumentParser(add_help=False)
    DATA.add_argument("--data-dir", help="folder with the IDX files (default: FMLAB_DATA, then the usual places)")
    from .version import __version__

    ap = argparse.ArgumentParser(prog="fmlab", description="Training experiments on Fashion-MNIST.",
                                 epilog="--debug (anywhere on the line, or FMLAB_DEBUG=1): show the traceback "
                                 "behind a one-line error")  # fmt: skip
    ap.add_argument("--version", action="version", version=f"fmlab {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="check or fetch the dataset")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    c = dsub.add_parser("check", parents=[FORMAT, DATA], help="where the dataset is, checksums, counts per class")
    c.set_defaults(func=cmd_data_check)
    f = dsub.add_parser("fetch", help="download the upstream files, verify, write atomically")
    f.add_argument("--url", default=None, help="base URL (default: upstream)")
    f.add_argument("--dest", help="target folder (default: the user cache dir)")
    f.set_defaults(func=cmd_data_fetch)

    t = sub.add_parser("train", help="train one network; last stdout line is JSON")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    t.add_argument("--out", help="checkpoint directory (default runs/train/<trial id>)")
    add_run_args(t)
    t.set_defaults(func=cmd_train)

    bt = sub.add_parser("bench-train", parents=[DATA],
                        help="fmlab's trainer vs a conventional DataLoader loop, alternating "
                        "processes; last line JSON with speedup")
    bt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for both sides, repeatable (e.g. train.precision=bf16: fmlab only)")
    bt.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3; early stopping held off)")
    bt.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    bt.add_argument("--train-subset", type=int, default=0, help="stratified training subset, 0 = all (default)")
    bt.add_argument("--seeds", default="0,1,2", help="N (0..N-1) or a list like 0,1,2 (default 0,1,2)")
    bt.add_argument("--repeats", type=int, default=0,
                    help="run pairs (conventional, fmlab), seeds in turn; 0 = one pair per seed (default)")
    bt.add_argument("--threads", type=int, default=0,
                    help="intra-op threads for both sides and the GEMM probe (0 = each side's default)")
    bt.add_argument("--conv-workers", type=int, default=1,
                    help="num_workers of the conventional DataLoader (default 1: faster than 0 here, BENCHMARKS.md)")
    bt.add_argument("--script", help="a conventional loop script file (default: python -m fmlab.conventional_train)")
    bt.add_argument("--peak-sizes", default="1024,2048", help="n of the GEMM peak probe's n x n products "
                    "(default 1024,2048)")
    bt.add_argument("--peak-repeats", type=int, default=20,
                    help="timed calls per kernel and size in the peak probe, after warm-up (default 20)")
    bt.set_defaults(func=cmd_bench_train)

    sp = sub.add_parser("speedrun", parents=[DATA],
                        help="time-to-accuracy records: each recipe x seed as its own `fmlab train` "
                        "process, whole wall time; last line JSON")
    sp.add_argument("file", help="speedrun file, e.g. studies/speedrun.toml")
    sp.add_argument("--recipe", action="append", help="run only this recipe (repeatable; default all)")
    sp.add_argument("--seeds", help="N (0..N-1) or a list like 0,1,2 (default: the file's seeds)")
    sp.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = fmlab's default: all cores)")
    sp.add_argument("--log", default="runs/speedrun/runs.jsonl", help="JSONL file each run is appended to")
    sp.set_defaults(func=cmd_speedrun)

    rp = sub.add_parser("report", parents=[STORE, FORMAT],
                        help="a study's report: index.html, summary.md, figures, hiplot.html")
    rp.add_argument("study")
    rp.add_argument("--budget", help="which budget's trials (needed when the study has several)")
    rp.add_argument("--out", help="output folder (default reports/<study>, or reports/<study>-<budget>)")
    rp.set_defaults(func=cmd_report)
    sw = sub.add_parser("sweep", help="run a study file's trials (resumes; nothing COMPLETE is redone)")
    sw.add_argument("study_file")
    sw.add_argument("--budget", default="full", help="a [budgets.NAME] of the study file: full (default) or quick")
    sw.add_argument("--seeds", help="N (seeds 0..N-1) or a list like 0,1,2; overrides the study and budget")
    sw.add_argument("--workers", type=int, default=None,
                    help="local worker processes (default: one per core, 1 thread each); 0 = inline")
    sw.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local processes (default) or Ray tasks (needs the extra: pip install 'fmlab[ray]')")
    sw.add_argument("--address", help="Ray: auto, HOST:PORT or ray://HOST:PORT (default: RAY_ADDRESS, else a "
                    "new local instance)")
    sw.add_argument("--cpus-per-trial", type=float, default=1.0, help="Ray: CPUs per trial (default 1)")
    sw.add_argument("--gpus-per-trial", type=float, default=None,
                    help="Ray: GPUs per trial, fractions allowed (default: 1 when the cluster has GPUs, else 0)")
    sw.add_argument("--store", help=store_help)
    sw.add_argument("--dry-run", action="store_true", help="print the plan and an estimate; run nothing")
    sw.add_argument("--retry-failed", action="store_true", help="rerun the study's FAILED trials")
    sw.add_argument("--plain", action="store_true", help="line-by-line progress even on a terminal")
    sw.add_argument("--tensorboard", metavar="DIR", help="write one TensorBoard run per trial to DIR as epochs "
                    "finish: scalars and HParams (needs pip install 'fmlab[tensorboard]')")
    sw.add_argument("--report-every", type=float, default=0, metavar="SECONDS",
                    help="rewrite the study's report (reports/<study>[-<budget>]/) while the sweep runs, at most "
                    "this often; its test-set pass runs once, at the end (default 0: no live report)")
    add_run_args(sw)
    sw.set_defaults(func=cmd_sweep)

    wa = sub.add_parser("watch", parents=[STORE],
                        help="a live view of a study while it runs: progress, running trials, failures, "
                        "ranking so far (read-only)")
    wa.add_argument("study")
    wa.add_argument("--budget", help="which budget's trials (needed when the study has several)")
    wa.add_argument("--every", type=float, default=2.0, metavar="SECONDS", help="refresh interval (default 2)")
    wa.set_defaults(func=cmd_watch)

    ls = sub.add_parser("ls", parents=[STORE, FORMAT], help="trials in the store: state, cell, seed, metrics")
    ls.add_argument("study", nargs="?")
    ls.add_argument("--budget")
    ls.add_argument("--state", choices=["WAITING", "RUNNING", "COMPLETE", "FAILED"])
    ls.set_defaults(func=cmd_ls)

    sh = sub.add_parser("show", parents=[STORE, FORMAT],
                        help="one trial: config, metrics, per-epoch rows, traceback and log")
    sh.add_argument("trial", help="a trial id or a unique prefix")
    sh.set_defaults(func=cmd_show)

    rs = sub.add_parser("results", parents=[STORE], help="per-trial and per-epoch tables of a study")
    rs.add_argument("study")
    rs.add_argument("--out", help="output folder (trials.csv, epochs.csv)")
    rs.add_argument("--tensorboard", metavar="DIR", help="also (or instead) write one TensorBoard run per trial to "
                    "DIR from the store, replacing earlier runs of these trials (needs fmlab[tensorboard])")
    rs.add_argument("--as", dest="as_", choices=["csv", "jsonl"], default="csv")
    rs.add_argument("--budget", help="which budget's trials (needed when the study has several)")
    rs.set_defaults(func=cmd_results)
    pb = sub.add_parser("publish", parents=[STORE],
                        help="a study's results as a folder for the repository: tables, summary, "
                        "figures, run.json, best/ (atomic)")
    pb.add_argument("study_file")
    pb.add_argument("--budget", default="full", help="the budget whose trials to publish (default full)")
    pb.add_argument("--seeds", help="the --seeds the sweep ran with, if it overrode the study's")
    pb.add_argument("--out", help="folder to write (default results/<study>-<budget>)")
    pb.set_defaults(func=cmd_publish)
    im = sub.add_parser("import", parents=[STORE],
                        help="load a results folder into a store: its COMPLETE trials and best checkpoint")
    im.add_argument("folder", help="a folder written by fmlab publish, e.g. results/seed-cpu")
    im.set_defaults(func=cmd_import)

    def ckpt_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("ckpt", metavar="CKPT", help="trial id, STUDY:best, or a checkpoint directory")
        p.add_argument("--store", default=str(DEFAULT_PATH), help=f"trial store for ids (default {DEFAULT_PATH})")

    p = sub.add_parser("params", parents=[FORMAT], help="trainable parameters per layer, total, size")
    ckpt_arg(p)
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("bench", parents=[DATA],
                       help="latency and throughput: torch vs ONNX Runtime fp32/int8; last line JSON")
    ckpt_arg(p)
    p.add_argument("--threads", type=int, default=0, help="threads for batched runs (0 = all cores)")
    p.add_argument("--latency-threads", type=int, default=1, help="threads for batch-1 latency (default 1)")
    p.add_argument("--runs", type=int, default=1000, help="timed batch-1 calls after warm-up (default 1000)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per batch size (default 10)")
    p.add_argument("--batches", default="256,1024", help="batch sizes for throughput (default 256,1024)")
    p.add_argument("--runtimes", help="comma list of torch_eager, torch_script, torch_compile, ort_fp32, ort_int8 "
                   "(default all but torch_compile: minutes to compile cold, no faster here)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", parents=[DATA], help="ONNX file, checked against torch on the test set")
    ckpt_arg(p)
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="file to write (atomically)")
    p.add_argument("--int8", action="store_true", help="static int8 quantization (QDQ) calibrated on train images")
    p.add_argument("--calib", type=int, default=500, help="calibration images for --int8 (default 500)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", parents=[FORMAT], help="top classes and probabilities for your own images")
    ckpt_arg(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...) or folders")
    p.add_argument("--top", type=int, default=3, help="classes to show per image (default 3)")
    p.set_defaults(func=cmd_predict)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FMLAB_DEBUG", "") not in ("", "0")
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    if getattr(args, "url", "x") is None:
        from .data import UPSTREAM_URL

        args.url = UPSTREAM_URL
    try:
        rc = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, inside the handler, not at exit
        return rc
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # another pipe (a worker's, a socket) broke: that is a bug to see, not a quiet exit
        # `fmlab ls --format json | head -c 300`: the reader has what it wanted. Point stdout at devnull so
        # the interpreter's last flush does not fail again (the recipe in Python's signal docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except FmlabError as e:
        if debug:  # the traceback the one-line error hides, then the line itself
            import traceback

            traceback.print_exc()
        err(f"fmlab: error: {e}")
        return 2
    except KeyboardInterrupt:
        err("fmlab: interrupted")
        return 130


def _stdout_gone() -> bool:
    """True when stdout is a pipe whose reader has closed it (poll reports POLLERR on its write end)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no stdout fd: trust the error
        return True


if __name__ == "__main__":
    sys.exit(main())
