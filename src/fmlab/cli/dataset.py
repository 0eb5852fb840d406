"""`fmlab data check` and `fmlab data fetch`: where the dataset is, its checksums and counts; the download."""

from __future__ import annotations

import argparse

from fmlab.cli.common import Command, err, out_json, print_table


class DataCheck(Command):
    name = "data check"
    help = "where the dataset is, checksums, counts per class"
    parents = ("format", "data")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.data import idx as data

        rep = data.check(args.data_dir)
        if args.format == "json":
            out_json(rep)
        else:
            files = rep["files"]
            print_table(
                ["check", "file", "items", "sha256", "path"],
                [
                    [
                        "OK" if f["sha256_ok"] and f["count_ok"] else "MISMATCH",
                        f["name"],
                        str(f["count"]),
                        f"{f['sha256'][:16]}…",
                        str(f["path"]),
                    ]
                    for f in files
                ],
                right=(2,),
            )
            labels = [f for f in files if "per_class" in f]
            if labels:  # one column per label file: the counts per class side by side
                classes = list(dict.fromkeys(c for f in labels for c in f["per_class"]))
                print()
                print_table(
                    ["class", *(f["name"] for f in labels)],
                    [[c, *(str(f["per_class"].get(c, 0)) for f in labels)] for c in classes],
                    right=tuple(range(1, len(labels) + 1)),
                )
        if not rep["ok"]:
            err(f"fmlab: error: some files do not match upstream (see above); {data.FIX}")
            return 1
        return 0


class DataFetch(Command):
    name = "data fetch"
    help = "download the upstream files, verify, write atomically"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=None, help="base URL (default: upstream)")
        p.add_argument("--dest", help="target folder (default: the user cache dir)")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.data import idx as data

        paths = data.fetch(data.UPSTREAM_URL if args.url is None else args.url, args.dest)
        for p in paths:
            err(f"wrote {p}")
        return 0
