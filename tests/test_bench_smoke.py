"""The smoke benchmark's reading of Snakemake's log (bench/bench_smoke.py): per-rule job times."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_smoke import job_times  # noqa: E402

LOG = """\
[Sat Nov 21 14:23:30 2026]
localrule build_embedded:
    output: data/embedded_deblur/manifest.json
    jobid: 79
    resources: tmpdir=/tmp
[Sat Nov 21 14:23:31 2026]
rule train:
    output: runs/smoke/embedded_deblur/evssm/seed0/final.pt
    jobid: 5
    wildcards: scale=smoke
[Sat Nov 21 14:23:33 2026]
Finished jobid: 79 (Rule: build_embedded)
1 of 3 steps (33%) done
[Sat Nov 21 14:23:34 2026]
rule train:
    jobid: 7
[Sat Nov 21 14:23:41 2026]
Finished jobid: 5 (Rule: train)
[Sat Nov 21 14:23:45 2026]
Finished jobid: 7 (Rule: train)
3 of 3 steps (100%) done
"""


def test_job_times_pairs_each_start_with_its_finish():
    got = job_times(LOG)
    assert got == {"train": {"jobs": 2, "sum_s": 21.0, "max_s": 11.0},
                   "build_embedded": {"jobs": 1, "sum_s": 3.0, "max_s": 3.0}}
    assert list(got) == ["train", "build_embedded"]  # the costliest rule first


def test_job_times_ignores_a_job_that_never_finished():
    assert job_times(LOG.split("[Sat Nov 21 14:23:45 2026]")[0])["train"]["jobs"] == 1
