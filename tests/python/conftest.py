"""Starts Joinery's registry, processor and projections (the real `joinery`
binary) against the real broker, in a topic namespace of their own, for
tests that use a third-party client. Nothing here imports Joinery code."""

import hashlib
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

import pytest

OPERATOR_TOKEN = "python-test-operator-token"
BOARD_TOKEN = "python-test-board-token"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def _ports():
    """Loopback ports outside the kernel's ephemeral range (below it, or
    above it when that leaves more room), as joinery_runtime's
    spare_loopback_ports: a port from bind(0) may be taken by any outgoing
    connection before the service binds it, these never are."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first, last = (int(p) for p in f.read().split()[:2])
    except (OSError, ValueError):
        first, last = 32768, 60999
    below, above = max(first - 10000, 0), max(65535 - last, 0)
    if below >= above and below >= 100:
        low, span = 10000, below
    elif above >= 100:
        low, span = last + 1, above
    else:
        low, span = 64535, 1000
    start = (os.getpid() * 7919) % span
    for n in range(span):
        yield low + (start + n) % span


_spare = _ports()


def free_port():
    for port in _spare:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no spare loopback port below the ephemeral range")


def wait_ready(url, proc, log):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{open(log).read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within 60 s:\n{open(log).read()[-3000:]}")


@pytest.fixture(scope="module")
def stack():
    binary = os.environ.get("JOINERY_BIN")
    if not binary:
        raise RuntimeError("JOINERY_BIN must name the built joinery binary (deploy/local/test sets it)")
    brokers = os.environ.get("JOINERY_KAFKA_BROKERS", "127.0.0.1:9092")
    work = tempfile.mkdtemp(prefix="joinery-pytest-")
    namespace = f"pytest-{uuid.uuid4().hex}."
    tokens = os.path.join(work, "tokens")
    with open(tokens, "w") as f:
        f.write(f"{hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()} operator\n")
        f.write(f"{hashlib.sha256(BOARD_TOKEN.encode()).hexdigest()} board:opportunity\n")
    ports = {name: free_port() for name in ("registry", "processor", "projections")}
    env = dict(
        os.environ,
        JOINERY_KAFKA_BROKERS=brokers,
        JOINERY_TOPIC_NAMESPACE=namespace,
        JOINERY_PARTITIONS="3",
        JOINERY_REGISTRY_URL=f"http://127.0.0.1:{ports['registry']}",
        JOINERY_REGISTRY_LISTEN=f"127.0.0.1:{ports['registry']}",
        JOINERY_PROCESSOR_LISTEN=f"127.0.0.1:{ports['processor']}",
        JOINERY_PROJECTIONS_LISTEN=f"127.0.0.1:{ports['projections']}",
        JOINERY_PROCESSOR_DATA_DIR=os.path.join(work, "processor"),
        JOINERY_PROJECTIONS_DATA_DIR=os.path.join(work, "projections"),
        JOINERY_PROCESSOR_GROUP=f"{namespace}processor",
        JOINERY_PROJECTIONS_GROUP=f"{namespace}projections",
        JOINERY_TOKENS_FILE=tokens,
        JOINERY_MISSIONS_DIR=os.path.join(ROOT, "missions"),
        JOINERY_BOARD_ASSETS=os.path.join(ROOT, "web", "node_modules", "govuk-frontend", "dist", "govuk"),
    )
    procs = []
    try:
        for name in ("registry", "processor", "projections"):
            log = os.path.join(work, f"{name}.log")
            proc = subprocess.Popen([binary, name], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
            procs.append(proc)
            wait_ready(f"http://127.0.0.1:{ports[name]}", proc, log)
        yield {
            "brokers": brokers,
            "namespace": namespace,
            "registry": f"http://127.0.0.1:{ports['registry']}",
            "projections": f"http://127.0.0.1:{ports['projections']}",
            "operator_token": OPERATOR_TOKEN,
            "board_token": BOARD_TOKEN,
            "work": work,
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
