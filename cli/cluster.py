"""`search cluster`: start and stop a Ray cluster over several machines, and write a Slurm batch script.

Thin wrappers over `ray start` / `ray stop` with this workload's defaults: Ray's token authentication on
(`search.run.rayauth`; `--no-auth` is the explicit opt-out), no Ray dashboard (it would listen on every interface), a
small object store (trials return a few kilobytes; their files go to the artifact store), and a per-node scratch
folder where trials work when the artifact store is remote (`--scratch`, exported to the node's workers as
$PROXY_ATTENTION_SCRATCH). `search run --ray-address HEAD:PORT` then dispatches to the cluster.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import typer

from cli.errors import fail
from search.run.dispatch import OBJECT_STORE_BYTES
from search.run.leftovers import end_leftovers
from search.run.rayauth import AuthError, check_cluster, require_token, token_source, worker_token
from search.run.worker import SCRATCH_ENV

cluster_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Start and stop a Ray cluster; write a Slurm script."
)
PORT = 6379
# What may enter the batch script unquoted: Slurm's own syntax for a partition list and a time limit.
PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
TIME_LIMIT = re.compile(r"(\d+-)?\d+(:\d+){0,2}")


def _ray() -> str:
    """The `ray` command of this environment (next to this Python)."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else "ray"


def ray_start_args(
    address: str | None,
    port: int,
    num_cpus: int | None,
    num_gpus: int | None,
    object_store: int,
    block: bool,
    node_ip: str | None,
    temp_dir: str | None,
) -> list[str]:
    """The `ray start` command line of a head (no `address`) or a worker."""
    args = [_ray(), "start"]
    args += ["--address", address] if address else ["--head", "--port", str(port), "--include-dashboard=false"]
    args += [f"--object-store-memory={object_store}", "--disable-usage-stats"]
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        args.append(f"--num-gpus={num_gpus}")
    if node_ip:
        args.append(f"--node-ip-address={node_ip}")
    if temp_dir:
        args.append(f"--temp-dir={temp_dir}")
    if block:
        args.append("--block")
    return args


def _exec(args: list[str], scratch: Path | None) -> None:
    env = dict(os.environ)
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
        env[SCRATCH_ENV] = str(scratch.resolve())
    print("+ " + shlex.join(args), file=sys.stderr, flush=True)
    os.execve(args[0] if os.path.isabs(args[0]) else _which(args[0]), args, env)  # noqa: S606 (become `ray`)


def _which(name: str) -> str:
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    raise typer.BadParameter(f"{name} not found on PATH")


NUM_CPUS = typer.Option(None, help="CPUs this node offers (default: all)")
NUM_GPUS = typer.Option(None, help="GPUs this node offers (default: those Ray detects)")
SCRATCH = typer.Option(None, help="node-local folder for trials' work when the artifact store is remote")
BLOCK = typer.Option(False, help="stay in the foreground until stopped (Slurm, systemd, tests)")
NODE_IP = typer.Option(None, help="this node's address as the others reach it")
TEMP_DIR = typer.Option(None, help="Ray's session folder (default /tmp/ray)")
OBJECT_STORE_OPTION = typer.Option(OBJECT_STORE_BYTES, help="bytes of shared memory for Ray's object store")
NO_AUTH = typer.Option(
    False, "--no-auth", help="no Ray token: anyone who reaches this machine's Ray ports can run code on it"
)


def _auth(no_auth: bool, head: bool) -> None:
    """Token authentication for a node this command starts (see `search.run.rayauth`), or the explicit opt-out."""
    if no_auth:
        os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        mode = require_token(_ray()) if head else require_token()
        if not head:
            worker_token()
    except (AuthError, OSError, subprocess.SubprocessError) as exc:
        fail(str(exc))
    if mode == "token" and head:
        print(
            f"Ray token authentication: on (token from {token_source()}; each worker machine needs the same)",
            file=sys.stderr,
        )


@cluster_app.command()
def head(
    port: int = typer.Option(PORT, help="the port workers and `search run --ray-address` connect to"),
    num_cpus: int | None = NUM_CPUS,
    num_gpus: int | None = NUM_GPUS,
    scratch: Path | None = SCRATCH,
    object_store: int = OBJECT_STORE_OPTION,
    block: bool = BLOCK,
    node_ip_address: str | None = NODE_IP,
    temp_dir: str | None = TEMP_DIR,
    no_auth: bool = NO_AUTH,
) -> None:
    """Start the head node here; print its address and the command to run on each worker machine."""
    _auth(no_auth, head=True)
    address = f"{node_ip_address or _own_address()}:{port}"
    print(
        f"head: {address}\non each worker machine: search cluster worker {address} [--num-gpus N] "
        f"[--scratch DIR]\nthen: search run SPACE.yaml --ray-address {address}",
        file=sys.stderr,
        flush=True,
    )
    _exec(ray_start_args(None, port, num_cpus, num_gpus, object_store, block, node_ip_address, temp_dir), scratch)


@cluster_app.command()
def worker(
    address: str = typer.Argument(..., help="the head's HOST:PORT"),
    num_cpus: int | None = NUM_CPUS,
    num_gpus: int | None = NUM_GPUS,
    scratch: Path | None = SCRATCH,
    object_store: int = OBJECT_STORE_OPTION,
    block: bool = BLOCK,
    node_ip_address: str | None = NODE_IP,
    temp_dir: str | None = TEMP_DIR,
    no_auth: bool = NO_AUTH,
) -> None:
    """Join this machine to the cluster whose head is at ADDRESS."""
    _auth(no_auth, head=False)
    check_cluster(address)  # a refused worker is one line, not `ray start`'s traceback
    _exec(ray_start_args(address, PORT, num_cpus, num_gpus, object_store, block, node_ip_address, temp_dir), scratch)


@cluster_app.command()
def stop(force: bool = typer.Option(False, help="kill the node's processes instead of asking them to stop")) -> None:
    """Stop the Ray processes of this machine (head or worker), and those a killed `search run` left behind."""
    if ended := end_leftovers():
        print(f"ended {len(ended)} Ray processes a killed run left behind (pids {ended})", file=sys.stderr)
    _exec([_ray(), "stop", *(["--force"] if force else [])], None)


def _own_address() -> str:
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent; this picks the outward interface
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def slurm_script(
    space: Path,
    nodes: int,
    gpus_per_node: int,
    cpus_per_node: int,
    partition: str | None,
    time_limit: str | None,
    port: int,
    artifacts: str | None,
) -> str:
    """A batch script: the head on the first node, a worker on each other one (each with node-local scratch), then
    `search run` on the head's address. Submitting it again resumes the study on the next allocation."""
    for flag, value, pattern in (("--partition", partition, PARTITION), ("--time", time_limit, TIME_LIMIT)):
        if value is not None and not pattern.fullmatch(value):
            raise ValueError(f"{flag}: {value!r} is not a Slurm {flag[2:]} (expected {pattern.pattern})")
    for what, text in (
        ("the space path", str(space)),
        ("--artifacts", artifacts or ""),
        ("this folder", str(Path.cwd())),
    ):
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError(f"{what} {text!r} holds a control character (a newline would start a new command)")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", space.stem)  # a file name never breaks a #SBATCH line
    search = shlex.quote(str(Path(sys.executable).parent / "search"))
    project = shlex.quote(str(Path.cwd()))
    run = shlex.join(["run", str(space), *(["--artifacts", artifacts] if artifacts else [])])
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=search-{name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={cpus_per_node}",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        "#SBATCH --output=slurm-search-%j.out",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if time_limit:
        lines.append(f"#SBATCH --time={time_limit}")
    lines += [
        "# Written by `search cluster slurm`. Submit with sbatch; submit again to resume the study.",
        "set -euo pipefail",
        f"cd {project}",
        f"SEARCH={search}",
        f"PORT={port}",
        'SCRATCH="${SLURM_TMPDIR:-${TMPDIR:-/tmp}}/search-scratch-${SLURM_JOB_ID:-local}"',
        'RAYTMP="/tmp/ray-${SLURM_JOB_ID:-local}"  # short: Ray keeps Unix sockets in it',
        'mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        "HEAD_IP=$(srun --nodes=1 --ntasks=1 -w \"${NODES[0]}\" hostname --ip-address | awk '{print $1}')",
        'ADDRESS="$HEAD_IP:$PORT"',
        'srun --nodes=1 --ntasks=1 -w "${NODES[0]}" "$SEARCH" cluster head --port "$PORT" '
        f'--node-ip-address "$HEAD_IP" --num-cpus {cpus_per_node} --num-gpus {gpus_per_node} '
        '--scratch "$SCRATCH/head" --temp-dir "$RAYTMP-head" --block &',
        'until "$SEARCH" cluster wait "$ADDRESS" --nodes 1 --timeout 5 2>/dev/null; do sleep 2; done',
        'for i in "${!NODES[@]}"; do',
        '  [ "$i" -eq 0 ] && continue',
        '  srun --nodes=1 --ntasks=1 -w "${NODES[$i]}" "$SEARCH" cluster worker "$ADDRESS" '
        f'--num-cpus {cpus_per_node} --num-gpus {gpus_per_node} --scratch "$SCRATCH/node-$i" '
        '--temp-dir "$RAYTMP-node-$i" --block &',
        "done",
        f'"$SEARCH" cluster wait "$ADDRESS" --nodes {nodes} --timeout 300',
        "set +e",
        f'"$SEARCH" {run} --ray-address "$ADDRESS"',
        "status=$?",
        "kill $(jobs -p) 2>/dev/null; wait",
        "exit $status",
    ]
    return "\n".join(lines) + "\n"


@cluster_app.command()
def slurm(
    space: Path = typer.Argument(..., help="the space YAML"),
    nodes: int = typer.Option(..., help="machines to allocate"),
    gpus_per_node: int = typer.Option(..., help="GPUs per machine"),
    cpus_per_node: int = typer.Option(8, help="CPUs per machine"),
    partition: str | None = typer.Option(None, help="Slurm partition"),
    time: str | None = typer.Option(None, help="time limit, e.g. 24:00:00"),
    port: int = typer.Option(PORT, help="the head's port"),
    artifacts: str | None = typer.Option(None, help="artifact store (a shared path or s3://…)"),
    out: Path | None = typer.Option(None, help="script file (default <space>.sbatch)"),
) -> None:
    """Write a ready sbatch script that starts a Ray cluster over the allocation and runs SPACE on it."""
    if nodes < 1 or gpus_per_node < 0 or cpus_per_node < 1:
        fail("--nodes and --cpus-per-node must be positive, --gpus-per-node non-negative")
    if not space.exists():
        fail(f"{space} does not exist")
    path = out or space.with_suffix(".sbatch")
    try:
        script = slurm_script(space, nodes, gpus_per_node, cpus_per_node, partition, time, port, artifacts)
    except ValueError as exc:
        fail(str(exc))
    path.write_text(script)
    path.chmod(0o777 & ~_umask())  # executable, as far as the user's umask allows (077: the owner's alone)
    print(f"{path}: submit with `sbatch {path}` (again to resume)")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@cluster_app.command()
def wait(
    address: str = typer.Argument(..., help="the head's HOST:PORT"),
    nodes: int = typer.Option(1, help="wait until this many nodes are alive"),
    timeout: float = typer.Option(120, help="seconds before giving up (exit 1)"),
) -> None:
    """Wait until the cluster at ADDRESS has NODES live nodes (used by the Slurm script)."""
    import socket
    import time as clock

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    host, _, port = address.rpartition(":")
    deadline = clock.monotonic() + timeout
    while True:
        try:
            # ray.init waits a long time on an address where nothing listens: knock first.
            socket.create_connection((host, int(port)), timeout=2).close()
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            alive = sum(1 for n in ray.nodes() if n.get("Alive"))
            ray.shutdown()
            if alive >= nodes:
                print(f"{alive} nodes alive at {address}", file=sys.stderr)
                return
        except (OSError, RuntimeError):  # ConnectionError is an OSError
            pass
        if clock.monotonic() > deadline:
            fail(f"fewer than {nodes} nodes at {address} after {timeout:g} s", code=1)
        clock.sleep(1)
