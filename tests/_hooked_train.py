"""`python -m labkit ...` with one test hook, so a test can stop it at an exact moment (never used by labkit).

    python tests/_hooked_train.py HOOK MARKER SECONDS -- <labkit arguments>

HOOK is one of
  in-write:K  the K-th time this process renames a finished temporary file onto checkpoint.pt: the file is
              written and fsynced but not yet in place. Create MARKER, then sleep SECONDS.
  mid-step:S  in optimiser step S (counted over the whole run, from 1): after optimizer.step() and before the
              scheduler and the step counters move on. Create MARKER, then sleep SECONDS.
The test waits for MARKER and then sends SIGKILL or SIGINT.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

import torch


def pause(marker: Path, seconds: float) -> None:
    marker.touch()
    time.sleep(seconds)  # a handled SIGINT does not cut this short (PEP 475); SIGKILL does


def hook_in_write(k: int, marker: Path, seconds: float) -> None:
    real_replace, count = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "checkpoint.pt":
            count[0] += 1
            if count[0] == k:
                pause(marker, seconds)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace


def hook_mid_step(s: int, marker: Path, seconds: float) -> None:
    real_step = torch.optim.lr_scheduler.LambdaLR.step

    def step(self, *args, **kwargs):
        if self.last_epoch + 1 == s:  # the scheduler moves after the optimiser: last_epoch = steps done so far
            pause(marker, seconds)
        return real_step(self, *args, **kwargs)

    torch.optim.lr_scheduler.LambdaLR.step = step


def main() -> None:
    hook, marker, seconds, sep, *argv = sys.argv[1:]
    assert sep == "--", sys.argv
    name, value = hook.split(":")
    {"in-write": hook_in_write, "mid-step": hook_mid_step}[name](int(value), Path(marker), float(seconds))
    sys.argv = ["labkit", *argv]
    runpy.run_module("labkit", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
