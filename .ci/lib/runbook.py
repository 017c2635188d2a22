#!/usr/bin/env python3
"""Extracts the shell blocks of docs/contest-day.md for the rehearsal (.ci/site-test), so that it
runs the runbook's own commands, never a copy of them.

Usage: runbook.py RUNBOOK OUTDIR. Writes one file per ```sh block, in order: OUTDIR/NN-TAG.sh
(TAG: the words after `sh` in the block's info string, joined by `-`: gw, gw-check, pc-check…)
and OUTDIR/index, one line per block: `NN TAG STEP` (STEP: the `## ` heading above it, its
number only when it has one).
"""
import re
import sys
from pathlib import Path


def main() -> None:
    runbook, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    step, block, tag, index = "0", None, "", []
    for line in runbook.read_text(encoding="utf-8").splitlines():
        if block is None:
            heading = re.match(r"## (\d+)\.", line)
            if heading:
                step = heading.group(1)
            fence = re.match(r"```sh(?: (.+))?$", line)
            if fence:
                block, tag = [], "-".join((fence.group(1) or "").split())
            continue
        if line == "```":
            n = len(index) + 1
            (out / f"{n:02d}-{tag}.sh").write_text("\n".join(block) + "\n", encoding="utf-8")
            index.append(f"{n:02d} {tag} {step}")
            block = None
        else:
            block.append(line)
    if block is not None:
        sys.exit(f"{runbook}: a ```sh block is not closed")
    (out / "index").write_text("\n".join(index) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
