"""A whole deployment on one machine: SuperLink + one SuperNode per store, TLS and auth on.

What ``docs/deployment.md`` describes for headquarters and the stores, on 127.0.0.1 with free
ports: :func:`init_pki` material, ``flower-superlink`` with TLS and
``--enable-supernode-auth``, each store's public key registered with
``flwr supernode register``, one ``flower-supernode`` per store. The integration tests and
``benchmarks/bench_deployment.py`` use it; every process is stopped by PID when the context
exits, also on errors.

Example::

    with loopback_deployment(root, chain, ["s00", "s01", "s02"]) as deployment:
        outcome = deployment.run_app({"num-rounds": 1, "run-dir": str(root / "run")})
        assert outcome.status == "finished:completed"
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fedcrm.data.layout import discover_stores
from fedcrm.deployment.pki import init_pki
from fedcrm.deployment.processes import (
    LOOPBACK,
    TAG_VARIABLE,
    ManagedProcess,
    TlsFiles,
    flower_env,
    format_node_config,
    free_port,
    start_superlink,
    start_supernode,
    stop_all,
    tagged_processes,
    wait_for_port,
    write_flwr_connection,
)
from fedcrm.errors import FedcrmError

__all__ = ["DeploymentError", "LoopbackDeployment", "RunOutcome", "loopback_deployment"]

FEDERATION = "hq"
_REPO = Path(__file__).resolve().parents[2]


class DeploymentError(FedcrmError):
    """A deployment process or ``flwr`` command failed; the message carries its output."""


@dataclass(frozen=True)
class RunOutcome:
    """A finished ``flwr run``: Flower's verdict, the run id and what the stream printed."""

    run_id: int
    status: str
    seconds: float
    output: str


@dataclass
class LoopbackDeployment:
    """The running deployment: its processes, environment and files."""

    root: Path
    env: dict[str, str]
    chain: Path
    pki: Path
    superlink: ManagedProcess
    stores: dict[str, Path]  # store name → its data directory
    supernodes: dict[str, ManagedProcess] = field(default_factory=dict)
    processes: list[ManagedProcess] = field(default_factory=list)  # all started, for cleanup
    node_ids: dict[str, int] = field(default_factory=dict)  # store name → its SuperNode id

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.superlink.port}"

    @property
    def ca_cert(self) -> Path:
        return self.pki / "ca" / "ca.crt"

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI against this deployment; :class:`DeploymentError` on failure."""
        done = subprocess.run(
            ["flwr", *args], env=self.env, timeout=timeout, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise DeploymentError(f"flwr {' '.join(args)}:\n{done.stdout}\n{done.stderr}")
        return done

    def nodes(self) -> list[dict[str, object]]:
        listing = self.flwr("supernode", "list", FEDERATION, "--format", "json")
        return list(json.loads(listing.stdout)["nodes"])

    def online(self) -> int:
        return sum(n["status"] == "online" for n in self.nodes())

    def wait_online(self, count: int, timeout: float = 90) -> None:
        """Until ``count`` SuperNodes are online; fails early when one of ours has died."""
        deadline = time.monotonic() + timeout
        while self.online() < count:
            for node in self.supernodes.values():
                if not node.running():
                    raise DeploymentError(f"{node.name} exited:\n{node.output()}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"{count} SuperNodes not online after {timeout} s")
            time.sleep(1.0)

    def register(self, store: str) -> int:
        """Register the store's public key with the SuperLink; the node id it is given."""
        public = self.pki / "stores" / store / "supernode.pub"
        done = self.flwr(
            "supernode", "register", str(public), FEDERATION, "--name", store, "--format", "json"
        )
        node_id = int(json.loads(done.stdout)["node-id"])
        self.node_ids[store] = node_id
        return node_id

    def start_store(
        self,
        store: str,
        *,
        private_key: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        node_config: Mapping[str, str | int | float | bool] | None = None,
    ) -> ManagedProcess:
        """The store's SuperNode (its registered key unless ``private_key`` says otherwise)."""
        env = {**self.env, **(extra_env or {})}
        # partition-id: the store's index in the chain, which the coordinator (given the
        # run's data-dir) turns into the store's directory name for its reports
        index = list(self.stores).index(store)
        config = {"data-path": str(self.stores[store]), "partition-id": index,
                  **(node_config or {})}  # fmt: skip
        starts = sum(p.name.startswith(f"supernode-{store}") for p in self.processes)
        node = start_supernode(
            name=f"supernode-{store}" + (f".{starts}" if starts else ""),  # a restart: new logs
            superlink=self.address,
            port=free_port(),
            log_dir=self.root / "logs",
            env=env,
            root_certificates=self.ca_cert,
            private_key=private_key or self.pki / "stores" / store / "supernode.key",
            node_config=config,
        )
        self.processes.append(node)
        self.supernodes[store] = node
        return node

    def stop_store(self, store: str, timeout: float = 15.0) -> None:
        """Stop one store's SuperNode and everything it started (its ClientApps)."""
        node = self.supernodes.pop(store)
        left = stop_all([node], timeout=timeout)
        if left:
            raise DeploymentError(f"{node.name}: processes left after stopping: {left}")

    def kill_store(self, store: str) -> None:
        """SIGKILL the store's SuperNode and its ClientApps at once, as a crash would."""
        node = self.supernodes.pop(store)
        victims = {node.pid, *tagged_processes(node.tag)}
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        node.popen.wait(timeout=15)

    def app_dir(self) -> Path:
        """A directory ``flwr run`` packages: the project's ``pyproject.toml`` (the code is
        imported from the installed ``fedcrm`` package on every host)."""
        app = self.root / "app"
        if not (app / "pyproject.toml").is_file():
            app.mkdir(exist_ok=True)
            shutil.copy(_REPO / "pyproject.toml", app / "pyproject.toml")
        return app

    def start_run(self, run_config: Mapping[str, str | int | float | bool]) -> int:
        """``flwr run`` without streaming; the run id."""
        done = self.flwr(
            "run", str(self.app_dir()), FEDERATION, "--format", "json",
            "--run-config", format_node_config(run_config),
        )  # fmt: skip
        return int(json.loads(done.stdout)["run-id"])

    def status(self, run_id: int) -> str:
        runs = json.loads(self.flwr("ls", FEDERATION, "--format", "json").stdout)["runs"]
        for run in runs:
            if int(run["run-id"]) == run_id:
                return str(run["status"])
        raise DeploymentError(f"run {run_id} is not listed by the SuperLink")

    def wait_run(self, run_id: int, timeout: float = 600) -> str:
        """Until the run is finished; Flower's status (``finished:completed`` on success)."""
        deadline = time.monotonic() + timeout
        while not (status := self.status(run_id)).startswith("finished"):
            if time.monotonic() > deadline:
                raise DeploymentError(f"run {run_id} still {status} after {timeout} s")
            time.sleep(1.0)
        return status

    def run_app(
        self, run_config: Mapping[str, str | int | float | bool], timeout: float = 600
    ) -> RunOutcome:
        """``flwr run --stream`` to the end. ``--stream`` exits 0 also when the run failed:
        the status from ``flwr ls`` is the verdict."""
        began = time.perf_counter()
        done = self.flwr(
            "run", str(self.app_dir()), FEDERATION, "--stream",
            "--run-config", format_node_config(run_config), timeout=timeout,
        )  # fmt: skip
        seconds = time.perf_counter() - began
        started = re.search(r"Successfully started run (\d+)", done.stdout + done.stderr)
        if started is None:
            raise DeploymentError(f"flwr run started no run:\n{done.stdout}\n{done.stderr}")
        run_id = int(started.group(1))
        return RunOutcome(run_id, self.status(run_id), seconds, done.stdout)

    def stop(self) -> list[int]:
        """Stop every process this deployment started; the PIDs still alive (none, normally)."""
        remaining = stop_all(self.processes)
        return sorted(set(remaining) | set(tagged_processes(self.env[TAG_VARIABLE], prefix=True)))


@contextmanager
def loopback_deployment(
    root: Path,
    chain: Path,
    stores: Sequence[str],
    *,
    start: bool = True,
    online_timeout: float = 90,
) -> Iterator[LoopbackDeployment]:
    """PKI, SuperLink, registered stores and (``start``) their SuperNodes, all online.

    ``stores`` names the chain's stores in ``discover_stores`` order. Every process is stopped
    when the context exits; :class:`DeploymentError` if any outlives that.
    """
    if shutil.which("flower-superlink", path=flower_env()["PATH"]) is None:
        raise DeploymentError("flower-superlink is not installed next to this Python")
    store_dirs = discover_stores(chain)
    if len(store_dirs) < len(stores):
        raise DeploymentError(f"{chain}: {len(store_dirs)} stores, {len(stores)} named")
    env = flower_env(root / "flwr-home")
    pki = root / "pki"
    init_pki(pki, list(stores))
    tls = TlsFiles(pki / "ca" / "ca.crt", pki / "superlink" / "server.pem",
                   pki / "superlink" / "server.key")  # fmt: skip
    superlink = start_superlink(
        port=free_port(), tls=tls, log_dir=root / "logs", env=env, database=root / "superlink.db"
    )
    deployment = LoopbackDeployment(
        root, env, chain, pki, superlink, dict(zip(stores, store_dirs, strict=False)),
        processes=[superlink],
    )  # fmt: skip
    failed = False
    try:
        wait_for_port(LOOPBACK, superlink.port or 0, timeout=60, process=superlink)
        write_flwr_connection(root / "flwr-home", FEDERATION, deployment.address, tls.ca_cert)
        for store in stores:
            deployment.register(store)
        if start:
            for store in stores:
                deployment.start_store(store)
            deployment.wait_online(len(stores), timeout=online_timeout)
        yield deployment
    except BaseException:
        failed = True
        raise
    finally:
        left = deployment.stop()
        if left and not failed:
            raise DeploymentError(f"processes left after cleanup: {left}")
