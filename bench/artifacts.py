"""What the artifact store costs a trial: the quickstart trial run as a job (`search.run.worker.run_job`) with its
folder in a local store, then in an S3 store (moto's server: a real local S3 endpoint).

    python bench/artifacts.py           # 4 epochs of the quickstart trial, 3 runs each, medians
    python bench/artifacts.py --quick   # 2 epochs, 1 run each, 30 digits a class (80 in the full form)

A local or shared-path store is written in place (nothing to upload). A remote store's job works in node-local
scratch and uploads each checkpoint and metrics.jsonl after every epoch in a background thread, the rest at the end.
Overhead per epoch = (job seconds with S3 − with the local store) ÷ epochs ÷ the epoch's seconds; goal ≤ 5%.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit

from search.run.worker import Job, JobKind, Settings, run_job
from trainer.config import TrialConfig


def moto_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def timed_job(store: str, scratch: Path, epochs: int, n: int, per_class: int) -> float:
    config = {
        "dataset": {"kind": "digits", "limit_per_class": per_class},
        "image_size": 64,
        "batch_size": 32,
        "architecture": "test_resnet",
        "proxy_steps": f"{epochs // 2},p,{epochs - epochs // 2}",
        "optimizer": {"name": "adamw", "lr": 0.003},
        "seed": 0,
    }
    start = time.perf_counter()
    run_job(
        Job(JobKind.TRIAL, f"trial {n}", TrialConfig.from_dict(config), f"trials/{n}-bench"),
        Settings(store, None, str(scratch)),
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    epochs, repeats, per_class = (2, 1, 30) if args.quick else (4, 3, 80)
    server, endpoint = moto_server()
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "FSSPEC_S3_ENDPOINT_URL": endpoint,
        }
    )
    try:
        import fsspec
        import s3fs

        fsspec.config.set_conf_env(fsspec.config.conf)  # fsspec read FSSPEC_* at import: read them again

        s3fs.S3FileSystem(endpoint_url=endpoint).mkdir("bench")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            timed_job(str(tmp / "warmup"), tmp / "scratch", 1 + 1, 0, per_class)  # imports, model build caches
            local = [timed_job(str(tmp / "local"), tmp / "scratch", epochs, i + 1, per_class) for i in range(repeats)]
            remote = [timed_job("s3://bench/run", tmp / "scratch", epochs, i + 1, per_class) for i in range(repeats)]
            epoch_s = statistics.median(local) / epochs
            leftovers = [p for p in (tmp / "scratch").rglob("*") if p.is_file() and "shared" not in p.parts]
        overhead = (statistics.median(remote) - statistics.median(local)) / epochs
        emit(
            {
                "benchmark": "artifacts",
                "epochs": epochs,
                "local_store_job_s": statistics.median(local),
                "s3_store_job_s": statistics.median(remote),
                "epoch_s": epoch_s,
                "s3_overhead_per_epoch_s": overhead,
                "s3_overhead_fraction_of_epoch": overhead / epoch_s,
                "goal_fraction": 0.05,
                "scratch_files_left": len(leftovers),
            }
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
