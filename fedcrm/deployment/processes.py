"""Start and stop local SuperLink / SuperNode processes (tests, demos, docs).

Every process started here runs in its own session (``start_new_session=True``) and carries
an environment tag (``FEDCRM_PROCESS_TAG``). Flower's own children inherit the tag, also
those that detach into a new session (the SuperLink starts ``flower-superexec`` that way), so
:func:`stop_all` finds and ends every process a deployment left behind: first each process
group with SIGTERM, then every tagged process that is still alive, SIGKILL after a grace
period. Finding tagged processes reads ``/proc`` and so works on Linux only.

Example::

    env = flower_env(home)
    link = start_superlink(port=free_port(), tls=TlsFiles(ca, cert, key), log_dir=logs, env=env)
    wait_for_port("127.0.0.1", link.port, process=link)
    ...
    stop_all([link, *nodes])
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "TAG_VARIABLE",
    "ManagedProcess",
    "TlsFiles",
    "flower_env",
    "format_node_config",
    "free_port",
    "start_process",
    "start_superlink",
    "start_supernode",
    "stop_all",
    "tagged_processes",
    "wait_for_port",
    "write_flwr_connection",
]

#: Environment variable whose value marks every process of one local deployment.
TAG_VARIABLE = "FEDCRM_PROCESS_TAG"
LOOPBACK = "127.0.0.1"
#: ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` for the processes started here (Flower: 1 s).
SUPEREXEC_POLL_SECONDS = "0.2"


@dataclass(frozen=True)
class TlsFiles:
    """The SuperLink's TLS material: CA certificate, server certificate and its key (PEM)."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass
class ManagedProcess:
    """A started process, its logs and the tag its descendants inherit."""

    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    tag: str
    port: int | None = None
    _files: list[object] = field(default_factory=list, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def output(self) -> str:
        """Both logs, for error messages."""
        return f"--- {self.name} stdout ---\n{self.stdout()}\n--- stderr ---\n{self.stderr()}"

    def close_logs(self) -> None:
        for handle in self._files:
            handle.close()  # type: ignore[attr-defined]
        self._files.clear()


def flower_env(
    flwr_home: Path | None = None,
    tag: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """An environment for Flower's tools: quiet, offline, this venv first on PATH, tagged."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        # SuperExec looks for new tasks every second by default: each message waits for it
        FLWR_SUPEREXEC_TASK_POLL_INTERVAL=SUPEREXEC_POLL_SECONDS,
    )
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    env[TAG_VARIABLE] = tag or env.get(TAG_VARIABLE) or f"fedcrm-{uuid.uuid4().hex}"
    return env


def write_flwr_connection(
    flwr_home: Path, name: str, address: str, root_certificates: Path | None
) -> Path:
    """Write ``FLWR_HOME/config.toml`` with one SuperLink connection, the default.

    ``root_certificates`` is the CA that signed the SuperLink's certificate (an absolute path
    is required by ``flwr``); ``None`` means an insecure (plain HTTP) connection.
    """
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{name}"', "", f"[superlink.{name}]"]
    lines.append(f'address = "{address}"')
    if root_certificates is None:
        lines.append("insecure = true")
    else:
        lines.append(f'root-certificates = "{Path(root_certificates).resolve()}"')
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 60.0,
    process: ManagedProcess | None = None,
) -> None:
    """Return once ``host:port`` accepts TCP connections.

    Raises ``RuntimeError`` when ``process`` exits first and ``TimeoutError`` after
    ``timeout`` seconds; both messages hold the process's logs.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and not process.running():
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode} before "
                f"{host}:{port} opened\n{process.output()}"
            )
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            logs = process.output() if process is not None else ""
            raise TimeoutError(f"{host}:{port} did not open within {timeout:.0f} s\n{logs}")
        time.sleep(0.2)


def start_process(
    name: str,
    args: Sequence[str],
    log_dir: Path,
    env: Mapping[str, str],
    port: int | None = None,
) -> ManagedProcess:
    """Start ``args`` in a new session, stdout/stderr to ``log_dir/<name>.out|.err``."""
    env = dict(env)
    # One tag per process, prefixed by the deployment's tag: stopping one process leaves its
    # siblings alone, and ``tagged_processes(deployment_tag, prefix=True)`` finds them all.
    base = env.get(TAG_VARIABLE) or f"fedcrm-{uuid.uuid4().hex}"
    env[TAG_VARIABLE] = f"{base}.{name}.{uuid.uuid4().hex[:8]}"
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    out, err = out_path.open("wb"), err_path.open("wb")
    try:
        popen = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
        )
    except BaseException:
        out.close()
        err.close()
        raise
    return ManagedProcess(
        name=name,
        args=list(args),
        popen=popen,
        stdout_path=out_path,
        stderr_path=err_path,
        tag=env[TAG_VARIABLE],
        port=port,
        _files=[out, err],
    )


def start_superlink(
    *,
    port: int,
    log_dir: Path,
    env: Mapping[str, str],
    tls: TlsFiles | None,
    supernode_auth: bool = True,
    host: str = LOOPBACK,
    database: Path | None = None,
    name: str = "superlink",
) -> ManagedProcess:
    """``flower-superlink`` serving the Fleet, Control and Runtime APIs on ``host:port``.

    ``tls=None`` runs it ``--insecure`` (then ``supernode_auth`` must be false: Flower only
    authenticates SuperNodes over TLS).
    """
    args = ["flower-superlink", "--host", host, "--port", str(port)]
    if tls is None:
        if supernode_auth:
            raise ValueError("SuperNode authentication needs TLS")
        args.append("--insecure")
    else:
        args += ["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.cert)]
        args += ["--ssl-keyfile", str(tls.key)]
    if supernode_auth:
        args.append("--enable-supernode-auth")
    if database is not None:
        args += ["--database", str(database)]
    args.append("--disable-runtime-dependency-installation")
    return start_process(name, args, log_dir, env, port=port)


def format_node_config(config: Mapping[str, str | int | float | bool]) -> str:
    """``--node-config`` syntax: ``key="text" key=1 key=true`` (TOML values)."""
    parts = []
    for key, value in config.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def start_supernode(
    *,
    name: str,
    superlink: str,
    port: int,
    log_dir: Path,
    env: Mapping[str, str],
    root_certificates: Path | None,
    private_key: Path | None = None,
    node_config: Mapping[str, str | int | float | bool] | None = None,
    host: str = LOOPBACK,
    max_retries: int | None = None,
) -> ManagedProcess:
    """``flower-supernode`` connecting to ``superlink`` (``host:port``).

    ``port`` is the SuperNode's own local runtime API port: unique per SuperNode on a host.
    ``root_certificates=None`` connects without TLS.
    """
    args = ["flower-supernode", "--superlink", superlink, "--host", host, "--port", str(port)]
    if root_certificates is None:
        args.append("--insecure")
    else:
        args += ["--root-certificates", str(root_certificates)]
    if private_key is not None:
        args += ["--auth-supernode-private-key", str(private_key)]
    if node_config:
        args += ["--node-config", format_node_config(node_config)]
    if max_retries is not None:
        args += ["--max-retries", str(max_retries)]
    return start_process(name, args, log_dir, env, port=port)


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (dead, waiting for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def tagged_processes(tag: str, prefix: bool = False) -> list[int]:
    """PIDs of the live processes whose environment holds ``FEDCRM_PROCESS_TAG=tag``.

    ``prefix=True`` also matches the per-process tags :func:`start_process` derives from a
    deployment's tag (``tag.<name>.<id>``), i.e. every process of that deployment.
    """
    needle = f"{TAG_VARIABLE}={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        variables = environ.split(b"\0")
        if prefix:
            hit = any(v == needle or v.startswith(needle + b".") for v in variables)
        else:
            hit = needle in variables
        if hit and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_all(processes: Sequence[ManagedProcess], timeout: float = 15.0) -> list[int]:
    """Stop ``processes`` and everything they started; return the PIDs still alive (none).

    SIGTERM to each process group (newest first), wait; SIGTERM to any process still carrying
    one of their tags (detached children); SIGKILL whatever is left after ``timeout``.
    """
    tags = {p.tag for p in processes}
    for proc in reversed(processes):
        if proc.running():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                proc.popen.terminate()
    deadline = time.monotonic() + timeout
    for proc in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))

    def leftovers() -> list[int]:
        found = {p.pid for p in processes if _alive(p.pid)}
        if sys.platform.startswith("linux"):
            for tag in tags:
                found.update(tagged_processes(tag))
        return sorted(found)

    _signal(leftovers(), signal.SIGTERM)
    grace = time.monotonic() + min(timeout, 5.0)
    while leftovers() and time.monotonic() < grace:
        time.sleep(0.2)
    for proc in processes:
        if proc.running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    _signal(leftovers(), signal.SIGKILL)
    for proc in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=5.0)
        proc.close_logs()
    end = time.monotonic() + 5.0
    while (remaining := leftovers()) and time.monotonic() < end:
        time.sleep(0.2)
    return remaining
