#!/usr/bin/env python3
"""Why mirror TTA costs a net trained without mirrors: per-class test accuracy on the images as they
are, on their mirror images, and with the TTA fmlab's trainer applies (train.tta: the mean of the two
log-probabilities, renormalised).

    .venv/bin/python scripts/flip_probe.py results/further-cpu/best results/seed-cpu/best [--format json]

Each CKPT is what `fmlab predict` takes. The totals come from fmlab.training.loop.evaluate (the trainer's own
TTA path); the per-class rows from the same log-probabilities. One thread: it runs beside a sweep.
"""

from __future__ import annotations

import argparse
import json

import torch

from fmlab.deploy import infer
from fmlab.training.loop import evaluate


def probe(ref: str) -> dict:
    ld = infer.load(ref)
    x, y = infer.test_set(ld)
    with torch.no_grad():
        plain = torch.cat([ld.net(x[i : i + 1024]) for i in range(0, len(y), 1024)])
        mirror = torch.cat([ld.net(x[i : i + 1024].flip(3)) for i in range(0, len(y), 1024)])
    tta = torch.log_softmax((plain + mirror) / 2, dim=1)
    views = {"plain": plain, "mirrored": mirror, "tta": tta}
    rows = [
        {
            "class": name,
            "n": int((y == c).sum()),
            **{v: int((out[y == c].argmax(1) == c).sum()) / int((y == c).sum()) for v, out in views.items()},
        }
        for c, name in enumerate(ld.classes)
    ]
    total = {v: int((out.argmax(1) == y).sum()) / len(y) for v, out in views.items()}
    # the trainer's own evaluation must agree with the log-probs above, or this probe explains nothing
    assert evaluate(ld.net, x, y)["acc"] == total["plain"]
    assert evaluate(ld.net, x, y, tta=True)["acc"] == total["tta"]
    trained_on_flips = bool(ld.cfg.data.flip)
    return {
        "checkpoint": ref,
        "trial_id": ld.trial_id,
        "trained_on_flips": trained_on_flips,
        "total": total,
        "classes": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt", nargs="+")
    ap.add_argument("--format", choices=("table", "json"), default="table")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = [probe(r) for r in a.ckpt]
    if a.format == "json":
        print(json.dumps(out, indent=1))
        return
    for p in out:
        t = p["total"]
        print(
            f"{p['checkpoint']} ({p['trial_id']}, trained on mirrors: {p['trained_on_flips']}): test acc "
            f"plain {100 * t['plain']:.2f}%, mirrored {100 * t['mirrored']:.2f}%, tta {100 * t['tta']:.2f}%"
        )
        print(f"  {'class':<12} {'plain':>7} {'mirrored':>9} {'tta':>7}")
        for r in p["classes"]:
            print(f"  {r['class']:<12} {100 * r['plain']:6.1f}% {100 * r['mirrored']:8.1f}% {100 * r['tta']:6.1f}%")


if __name__ == "__main__":
    main()
