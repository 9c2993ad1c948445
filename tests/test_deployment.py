"""A real deployment on loopback: SuperLink + 3 SuperNodes, TLS and SuperNode authentication.

The module fixture generates a 3-store chain and its PKI (``init_pki``), starts
``flower-superlink`` with TLS and ``--enable-supernode-auth``, registers each store's public
key with ``flwr supernode register`` and starts one ``flower-supernode`` per store. The tests
then run the app once with ``flwr run`` (one round, one analytics query), and show that a
SuperNode whose key was never registered is refused. Every process is stopped at the end,
also when a test fails, and the fixture asserts that none is left.

Each message starts a fresh ``flwr-clientapp`` subprocess per store, so the run takes about
2.5 minutes on 2 cores; the whole module stays under ~4 minutes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

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
    start_process,
    start_superlink,
    start_supernode,
    stop_all,
    tagged_processes,
    wait_for_port,
    write_flwr_connection,
)
from fedcrm.synthetic.chain import ChainParams, generate_chain

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc for cleanup"
)

REPO = Path(__file__).resolve().parents[1]
STORES = ["s00", "s01", "s02"]
FEDERATION = "hq"


@dataclass
class Deployment:
    root: Path
    env: dict[str, str]
    chain: Path
    pki: Path
    superlink: ManagedProcess
    supernodes: list[ManagedProcess]
    processes: list[ManagedProcess]  # everything started, for cleanup

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.superlink.port}"

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI against this deployment's SuperLink; fail with its output."""
        done = subprocess.run(
            ["flwr", *args], env=self.env, timeout=timeout, capture_output=True, text=True
        )
        assert done.returncode == 0, f"flwr {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def nodes(self) -> list[dict[str, object]]:
        listing = self.flwr("supernode", "list", FEDERATION, "--format", "json")
        return json.loads(listing.stdout)["nodes"]


def _wait_online(deployment: Deployment, count: int, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = deployment.nodes()
        if sum(n["status"] == "online" for n in nodes) >= count:
            return nodes
        for node in deployment.supernodes:
            assert node.running(), node.output()
        if time.monotonic() > deadline:
            pytest.fail(f"{count} SuperNodes not online after {timeout} s: {nodes}")
        time.sleep(1.0)


# -- the helpers (fast) ---------------------------------------------------------------------
def test_format_node_config_writes_toml_values():
    text = format_node_config(
        {"data-path": '/srv/a "b"', "partition-id": 2, "require-secagg": True}
    )
    assert text == 'data-path="/srv/a \\"b\\"" partition-id=2 require-secagg=true'


def test_write_flwr_connection_is_read_by_flwr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from flwr.cli.flower_config import read_superlink_connection

    ca = tmp_path / "ca.crt"
    ca.write_text("x", encoding="utf-8")
    write_flwr_connection(tmp_path / "home", "hq", "127.0.0.1:9091", ca)
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    connection = read_superlink_connection("hq")
    assert connection.address == "127.0.0.1:9091"
    assert connection.root_certificates == str(ca.resolve())


def test_stop_all_ends_detached_children(tmp_path: Path):
    env = flower_env(tmp_path / "home")
    # The child escapes into its own session, as the SuperLink's flower-superexec does.
    parent = start_process(
        "tree", ["sh", "-c", "setsid sleep 300 & exec sleep 300"], tmp_path / "logs", env
    )
    deadline = time.monotonic() + 10
    while len(tagged_processes(parent.tag)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(tagged_processes(env[TAG_VARIABLE], prefix=True)) == 2
    assert stop_all([parent], timeout=5) == []
    assert tagged_processes(env[TAG_VARIABLE], prefix=True) == []
    assert not parent.running()


def test_wait_for_port_reports_a_process_that_died(tmp_path: Path):
    dead = start_process("dead", ["sh", "-c", "echo boom >&2; exit 3"], tmp_path, flower_env())
    with pytest.raises(RuntimeError, match="boom"):
        wait_for_port(LOOPBACK, free_port(), timeout=10, process=dead)
    stop_all([dead])


# -- the deployment (slow) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if shutil.which("flower-superlink", path=flower_env()["PATH"]) is None:
        pytest.fail("flower-superlink is not installed next to this Python")
    root = tmp_path_factory.mktemp("deployment")
    env = flower_env(root / "flwr-home")
    tag = env[TAG_VARIABLE]
    processes: list[ManagedProcess] = []
    try:
        chain = root / "chain"
        generate_chain(chain, ChainParams(stores=3, customers_per_store=150, seed=5))
        pki = root / "pki"
        init_pki(pki, STORES)
        ca = pki / "ca" / "ca.crt"
        tls = TlsFiles(ca, pki / "superlink" / "server.pem", pki / "superlink" / "server.key")

        superlink = start_superlink(
            port=free_port(), tls=tls, log_dir=root / "logs", env=env,
            database=root / "superlink.db",
        )  # fmt: skip
        processes.append(superlink)
        wait_for_port(LOOPBACK, superlink.port or 0, timeout=60, process=superlink)
        write_flwr_connection(root / "flwr-home", FEDERATION, f"{LOOPBACK}:{superlink.port}", ca)
        partial = Deployment(root, env, chain, pki, superlink, [], processes)

        for store in STORES:
            partial.flwr(
                "supernode", "register", str(pki / "stores" / store / "supernode.pub"),
                FEDERATION, "--name", store,
            )  # fmt: skip
        store_dirs = discover_stores(chain)
        for index, (store, store_dir) in enumerate(zip(STORES, store_dirs, strict=True)):
            node = start_supernode(
                name=f"supernode-{store}",
                superlink=partial.address,
                port=free_port(),
                log_dir=root / "logs",
                env=env,
                root_certificates=ca,
                private_key=pki / "stores" / store / "supernode.key",
                node_config={"data-path": str(store_dir), "partition-id": index},
            )
            processes.append(node)
            partial.supernodes.append(node)
        _wait_online(partial, len(STORES))
        yield partial
    finally:
        remaining = stop_all(processes)
        left = tagged_processes(tag, prefix=True)
        assert not remaining and not left, f"processes left after cleanup: {remaining} {left}"


@pytest.mark.slow
def test_registered_supernodes_come_online_over_tls(deployment: Deployment):
    nodes = deployment.nodes()
    assert len(nodes) == len(STORES)
    assert {n["status"] for n in nodes} == {"online"}
    log = deployment.superlink.stderr() + deployment.superlink.stdout()
    assert "https://" in log  # TLS is on: uvicorn serves HTTPS
    assert log.count("Activated node_id=") == len(STORES)


@pytest.mark.slow
def test_flwr_run_completes_on_the_deployment(deployment: Deployment):
    root = deployment.root
    app_dir, run_dir, keys = root / "app", root / "run", root / "coordinator-keys"
    app_dir.mkdir()
    shutil.copy(REPO / "pyproject.toml", app_dir / "pyproject.toml")
    run_config = (
        f'num-rounds=1 preference=false analytics-queries="lifecycle_funnel" '
        f'data-dir="{deployment.chain}" run-dir="{run_dir}" expected-stores=3 min-stores=2 '
        f'audit-key-dir="{keys}" node-timeout=240'
    )
    streamed = deployment.flwr(
        "run", str(app_dir), FEDERATION, "--stream", "--run-config", run_config, timeout=420
    )
    runs = json.loads(deployment.flwr("ls", FEDERATION, "--format", "json").stdout)["runs"]
    # --stream exits 0 even when the run failed: the status is the verdict.
    assert [r["status"] for r in runs] == ["finished:completed"], streamed.stdout[-4000:]

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["rounds"] == 1
    assert len(summary["stores"]) == 3
    assert (run_dir / "model" / "churn.pt").is_file()
    card = json.loads((run_dir / "model" / "model_card.json").read_text(encoding="utf-8"))
    assert card["federation"]["stores"] == 3
    assert card["federation"]["secure_aggregation"] is True
    funnel = json.loads((run_dir / "analytics" / "lifecycle_funnel.json").read_text("utf-8"))
    assert funnel["status"] == "released"
    assert funnel["query"] == "lifecycle_funnel"
    assert sorted(funnel["stores"]) == [p.name for p in discover_stores(deployment.chain)]
    for node in deployment.supernodes:
        assert node.running(), node.output()


@pytest.mark.slow
def test_unregistered_supernode_is_refused(deployment: Deployment):
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = deployment.root / "rogue" / "supernode.key"
    key_path.parent.mkdir(mode=0o700)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    before = {n["node-id"] for n in deployment.nodes()}
    rogue = start_supernode(
        name="supernode-rogue",
        superlink=deployment.address,
        port=free_port(),
        log_dir=deployment.root / "logs",
        env=deployment.env,
        root_certificates=deployment.pki / "ca" / "ca.crt",
        private_key=key_path,
        node_config={"data-path": str(discover_stores(deployment.chain)[0]), "partition-id": 3},
    )
    deployment.processes.append(rogue)
    try:
        rogue.popen.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the unregistered SuperNode kept running:\n{rogue.output()}")
    assert rogue.popen.returncode != 0
    errors = rogue.stderr() + rogue.stdout()
    assert "Failed to activate SuperNode" in errors, errors
    link_log = deployment.superlink.stderr() + deployment.superlink.stdout()
    assert "No SuperNode found with the given public key" in link_log
    after = deployment.nodes()
    assert {n["node-id"] for n in after} == before
    assert len(after) == len(STORES)
