"""A real deployment on loopback: SuperLink + 3 SuperNodes, TLS and SuperNode authentication.

The module fixture (``fedcrm.deployment.loopback``) generates a 3-store chain and its PKI
(``init_pki``), starts ``flower-superlink`` with TLS and ``--enable-supernode-auth``, registers
each store's public key with ``flwr supernode register`` and starts one ``flower-supernode``
per store. The tests then

- run the app with ``flwr run`` (one round, one analytics query);
- show that a SuperNode whose key was never registered is refused;
- kill one SuperNode mid-round (SIGKILL while it trains under SecAgg+): the round completes
  with the other two or fails cleanly, either way recorded, and the restarted SuperNode
  takes part in the next round;
- run a store with altered code that sends NaN, then mis-shaped updates: both rejected and
  recorded, the run completes on the honest stores' updates.

Every process is stopped at the end, also when a test fails, and the fixture checks that
none is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedcrm.data.layout import StoreLayout, discover_stores
from fedcrm.deployment.loopback import LoopbackDeployment, loopback_deployment
from fedcrm.deployment.processes import (
    LOOPBACK,
    TAG_VARIABLE,
    flower_env,
    format_node_config,
    free_port,
    start_process,
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
HOSTILE = Path(__file__).resolve().parent / "hostile_store"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackDeployment]:
    root = tmp_path_factory.mktemp("deployment")
    chain = root / "chain"
    generate_chain(chain, ChainParams(stores=3, customers_per_store=150, seed=5))
    with loopback_deployment(root, chain, STORES) as running:
        yield running  # stopped by PID on exit; DeploymentError if any process is left


def _run_config(deployment: LoopbackDeployment, name: str, **extra: object) -> dict:
    root = deployment.root
    return {
        "num-rounds": 1, "preference": False, "analytics-queries": "", "epsilon": 1.0,
        "data-dir": str(deployment.chain), "run-dir": str(root / name), "expected-stores": 3,
        "min-stores": 2, "audit-key-dir": str(root / "coordinator-keys"), "node-timeout": 240,
        **extra,
    }  # fmt: skip


def _summary(deployment: LoopbackDeployment, name: str) -> dict:
    return json.loads((deployment.root / name / "summary.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_registered_supernodes_come_online_over_tls(deployment: LoopbackDeployment):
    nodes = deployment.nodes()
    assert len(nodes) == len(STORES)
    assert {n["status"] for n in nodes} == {"online"}
    assert {int(n["node-id"]) for n in nodes} == set(deployment.node_ids.values())
    log = deployment.superlink.stderr() + deployment.superlink.stdout()
    assert "https://" in log  # TLS is on: uvicorn serves HTTPS
    assert log.count("Activated node_id=") == len(STORES)


@pytest.mark.slow
def test_unregistered_supernode_is_refused(deployment: LoopbackDeployment):
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
        root_certificates=deployment.ca_cert,
        private_key=key_path,
        node_config={"data-path": str(deployment.stores["s00"])},
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


def _wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def _status(deployment: LoopbackDeployment, store: str) -> str:
    node_id = str(deployment.node_ids[store])
    return next(str(n["status"]) for n in deployment.nodes() if n["node-id"] == node_id)


@pytest.mark.slow
def test_a_run_completes_through_a_supernode_killed_mid_round(deployment: LoopbackDeployment):
    """``flwr run`` of two SecAgg+ training rounds and one analytics query, during which s02
    is SIGKILLed while it trains (its third SecAgg+ message of round 1: keys already shared).

    With 3 stores the SecAgg+ reconstruction threshold is 2, so round 1 may complete with the
    other two (s02's masks rebuilt from their shares) — recorded as a dropout — or fail —
    recorded as a failed round; either way the run goes on. s02 is restarted once the
    SuperLink has marked it offline, takes part in round 2 and answers the query: the run
    ends with a model, its card, a summary and a released table, as in simulation.
    """
    victim, log = "s02", deployment.supernodes["s02"].stderr_path
    offset = log.stat().st_size
    config = _run_config(
        deployment, "run", **{"num-rounds": 2, "analytics-queries": "lifecycle_funnel"}
    )
    run_id = deployment.start_run(config)

    def training() -> bool:
        return log.read_bytes()[offset:].count(b"Receiving: train message") >= 3

    _wait_for(training, 300, "s02 to receive its round-1 training message")
    deployment.kill_store(victim)
    _wait_for(lambda: _status(deployment, victim) != "online", 120, "the SuperLink to see it")
    deployment.start_store(victim)  # same key, same node id: it rejoins
    deployment.wait_online(3)
    assert deployment.wait_run(run_id, timeout=600) == "finished:completed"

    run_dir = deployment.root / "run"
    summary = _summary(deployment, "run")
    first, second = summary["history"]
    incidents = [(e["kind"], e["round"]) for e in summary["incidents"]]
    if first["model_updated"]:  # completed within the threshold, the dropout recorded
        assert first["fit_results"] == 2 and first["fit_sampled"] == 3
        assert ("dropped", 1) in incidents
        victim_id = deployment.node_ids[victim]
        assert [e["node_id"] for e in summary["incidents"]] == [victim_id]
    else:  # failed cleanly, recorded
        assert ("failed", 1) in incidents
    assert all(e["round"] == 1 for e in summary["incidents"])
    assert second["fit_results"] == 3 and second["model_updated"] is True  # rejoined
    assert second["fit_seconds"] > second["store_seconds_max"] > 0  # timed at both ends
    assert _status(deployment, victim) == "online"

    assert summary["rounds"] == 2 and len(summary["stores"]) == 3
    assert (run_dir / "model" / "churn.pt").is_file()
    card = json.loads((run_dir / "model" / "model_card.json").read_text(encoding="utf-8"))
    assert card["federation"]["stores"] == 3
    assert card["federation"]["secure_aggregation"] is True
    funnel = json.loads((run_dir / "analytics" / "lifecycle_funnel.json").read_text("utf-8"))
    assert funnel["status"] == "released"
    assert funnel["query"] == "lifecycle_funnel"
    assert sorted(funnel["stores"]) == [p.name for p in discover_stores(deployment.chain)]
    for store in deployment.stores.values():  # the task's cached arrays are gone at its end
        assert not (StoreLayout(store).private_dir / "cache" / f"run-{run_id}").exists()
    for node in deployment.supernodes.values():
        assert node.running(), node.output()


@pytest.mark.slow
def test_hostile_updates_are_rejected_and_the_run_goes_on(deployment: LoopbackDeployment):
    """s01 runs altered code (tests/hostile_store/sitecustomize.py) that replaces its update,
    after fedcrm's own guard, with NaN in round 1 and a mis-shaped one in round 2. Without
    SecAgg+ the coordinator sees each update: both are rejected and recorded; the honest
    stores' updates make the model."""
    hostile = "s01"
    deployment.stop_store(hostile)
    deployment.start_store(
        hostile, extra_env={"PYTHONPATH": str(HOSTILE), "FEDCRM_HOSTILE": "nan,shape"}
    )
    try:
        deployment.wait_online(3)
        outcome = deployment.run_app(
            _run_config(deployment, "hostile", **{"num-rounds": 2, "secagg": False}),
            timeout=600,
        )
        assert outcome.status == "finished:completed", outcome.output[-4000:]
    finally:
        deployment.stop_store(hostile)
        deployment.start_store(hostile)
    summary = _summary(deployment, "hostile")
    rejected = {(e["round"], e["node_id"]): e["reason"] for e in summary["rejections"]}
    hostile_id = deployment.node_ids[hostile]
    assert set(rejected) == {(1, hostile_id), (2, hostile_id)}
    assert "NaN" in rejected[(1, hostile_id)]
    assert "shape" in rejected[(2, hostile_id)]
    for record in summary["history"]:
        assert record["model_updated"] is True and record["fit_results"] == 3
    import numpy as np

    model = np.load(deployment.root / "hostile" / "model" / "churn.npz")
    assert all(np.isfinite(model[k]).all() for k in model.files)
    card = json.loads(
        (deployment.root / "hostile" / "model" / "model_card.json").read_text(encoding="utf-8")
    )
    assert card["federation"]["secure_aggregation"] is False
