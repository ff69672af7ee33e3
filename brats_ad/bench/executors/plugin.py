"""Built-in executors, registered through the same hook third parties use."""

from __future__ import annotations

from brats_ad.plugins import hookimpl
from brats_ad.registry import Registry


@hookimpl
def brats_ad_register_executors(registry: Registry) -> None:
    registry.add(
        "local",
        "brats_ad.bench.executors.local:LocalExecutor",
        help='this machine: units one after another in-process (default), or workers = "per-gpu" / N '
        "worker processes",
        params={"workers": 1},
    )
    registry.add(
        "slurm",
        "brats_ad.bench.executors.slurm:SlurmExecutor",
        help="one SLURM job per training unit through submitit; bench returns with the job ids, a rerun "
        "collects and resubmits",
        params={
            "partition": None, "gpus_per_node": 1, "cpus_per_task": 8, "timeout_min": 240, "mem_gb": 32,
            "array_parallelism": 32, "job_name": "brats-ad", "additional": {}, "setup": [],
            "cluster": "slurm", "folder": "jobs", "wait": False, "poll_s": 30.0,
        },
    )
