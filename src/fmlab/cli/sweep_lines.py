"""What `fmlab sweep` prints: the plan's first line, the --dry-run plan, the start, an interrupt and the outcome.

Human lines only (the plan on stdout for --dry-run, the rest on stderr); fmlab.cli.running drives the sweep.
"""

from __future__ import annotations

import argparse
from typing import Any

from fmlab.cli.common import cell_text, err
from fmlab.config.metrics import ALL_TRAIN
from fmlab.config.states import State
from fmlab.durations import duration


def sweep_head(p: Any, study_file: str) -> str:
    """The plan's first line: study, budget, cells x seeds = trials, store."""
    st, n = p.study, len(p.trials)
    label = f" [{st.label}]" if st.budget != "full" else ""
    cells = f"baseline + {len(st.arms)} arms" if st.arms else f"{len(st.cells())} cells"
    shared = len(st.cells()) * len(st.seeds) - n
    return (
        f"study {st.name} ({study_file}), budget {st.budget}{label}: {cells} x {len(st.seeds)} seeds = {n} trials"
        + (f" ({shared} shared by arms that resolve alike)" if shared else "")
        + f"; store {p.store}"
    )


SPEED_FROM = {
    "this machine": "from this store's trials on a machine like this one",
    "probed here": "probed here: a few training steps of its most common network",
    "other machines": "from this store's trials on other machines",
    "assumed": "assumed",
}


def print_dry_run(p: Any, args: argparse.Namespace) -> None:
    n_done, n_failed, n_run = (len(p.plan.done), len(p.plan.failed), len(p.plan.running)) if p.plan else (0, 0, 0)
    lo = p.layout
    print(sweep_head(p, args.study_file))
    print(
        f"to run: {len(p.todo)}, already COMPLETE: {n_done}, FAILED: {n_failed}"
        + ("" if args.retry_failed or not n_failed else " (skipped; --retry-failed reruns them)")
        + (f", RUNNING in another sweep: {n_run}" if n_run else "")
    )
    print(
        f"estimated time: <= {duration(p.estimate_s)} on {lo.where}, {lo.threads} thread(s) each "
        f"(upper bound, every trial to max_epochs; speed {SPEED_FROM[p.speed_from]})"
    )
    power_line = p.power_line()
    if power_line:
        print(power_line)
    for note in p.notes:
        print(note)
    if p.packs:
        from fmlab.training import packs

        sizes = sorted({len(g) for g in p.packs})
        print(f"packs: {len(p.packs)} (of {', '.join(map(str, sizes))} trial(s)), each trained as one model")
        by_id = {t.id: t for t in p.todo}
        for i, g in enumerate(p.packs, 1):
            shared = {k: v for k, v in by_id[g[0]].cell.items() if k not in packs.PACKED_OUT}
            print(f"  pack {i}: {cell_text(shared)}")
            for tid in g:
                print(f"    {tid}  seed {by_id[tid].seed}  {cell_text(by_id[tid].cell)}")
        return
    for t in p.todo:
        print(f"  {t.id}  seed {t.seed}  {cell_text(t.cell)}")


def print_start(p: Any, args: argparse.Namespace) -> None:
    pl, lo = p.plan, p.layout
    err(sweep_head(p, args.study_file))
    err(
        f"to run: {len(pl.todo)} on {lo.where}, {lo.threads} thread(s) each; already COMPLETE: {len(pl.done)}; "
        f"FAILED: {len(pl.failed)}"
        + (" (skipped; --retry-failed reruns them)" if pl.failed else "")
        + (f"; recovered from a dead sweep: {len(pl.recovered)}" if pl.recovered else "")
        + f"; estimate <= {duration(p.estimate_s)} (speed {SPEED_FROM[p.speed_from]})"
    )
    for note in p.notes:
        err(note)


def print_interrupted(live: Any) -> None:
    if live is not None:  # a last page that no longer reloads: nothing rewrites it now
        try:
            live.finish(test_pass=False)
        except Exception as e:
            err(f"fmlab: the last report page could not be written: {e}")
    err("fmlab: interrupted; running trials were given back and resume from their last epoch on the next run")


def print_outcome(o: Any, p: Any, args: argparse.Namespace, live: Any) -> None:
    st, tb = p.study, args.tensorboard
    label = f" [{st.label}]" if st.budget != "full" else ""
    if tb:
        err(
            f"TensorBoard: tensorboard --logdir {tb}"
            if o.board_error is None
            else f"fmlab: TensorBoard output stopped ({o.board_error}); the store has every result; rewrite the "
            f"runs with fmlab results {st.name} --budget {st.budget} --tensorboard {tb}"
        )
    if live is not None:
        from fmlab.training.env import cores

        s = live.stats()
        rep = live.finish()
        share = 100 * s["thread_cpu_s"] / max(o.wall_s * cores(), 1e-9)
        err(
            f"live report: {s['rewrites']} rewrite(s), {s['rewrite_s']:.1f}s wall, {s['thread_cpu_s']:.1f}s CPU in "
            f"the sweep's parent ({share:.1f}% of {cores()} core(s) x the sweep's {duration(o.wall_s)}); final report "
            f"with the test-set pass {rep['final_s']:.1f}s: {rep['index']}"
            + (f"; {len(s['errors'])} rewrite(s) failed, last: {s['errors'][-1]}" if s["errors"] else "")
        )
    done, failed = o.in_state(State.COMPLETE), o.in_state(State.FAILED)
    err(
        f"{st.name} ({st.budget}{label}): {len(done)}/{len(o.records)} COMPLETE ({o.progress.ran} run now), "
        f"{len(failed)} FAILED, wall {duration(o.wall_s)}"
    )
    if o.best is not None:
        m = o.best["metrics"]
        err(
            f"best trial by {st.select}: {o.best['id']} val acc {m['val_acc']:.4f} val loss {m['val_loss']:.4f} "
            f"(test acc {m['test_acc']:.4f}){label}"
        )
    elif done:  # complete, and none validated: data.val_size = 0
        err(
            f"no best trial by {st.select}: the trials trained on {ALL_TRAIN} with no validation split "
            f"(data.val_size = 0), each tested at its last epoch; fmlab report {st.name} --budget {st.budget} gives "
            "their test mean"
        )
    for r in failed:
        err(f"FAILED {r['id']}: {r['error']}  (fmlab show {r['id']}; rerun with --retry-failed)")
