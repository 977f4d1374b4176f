"""The process group's store under torchrun's shared agent store: a new round never reads the
last round's keys (pytorch/pytorch#135712), with real TCPStores on localhost."""

from __future__ import annotations

import datetime as dt
import socket
import threading

import pytest
import torch.distributed as dist

from okc.engine import rendezvous


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> dist.TCPStore:
    """A store standing in for torchrun's agent: it outlives the workers."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(store.port))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.delenv("OKC_ROUND", raising=False)
    return store


@pytest.mark.parametrize("stale", ["dead", "reused"])
def test_a_new_round_passes_over_the_last_rounds_entry(agent: dist.TCPStore, stale: str) -> None:
    # the last round's rank 0 died with its store; its entry is still in the agent's store, and
    # its port is closed or (reused) another program's store listens there now
    other = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    port = _dead_port() if stale == "dead" else other.port
    agent.set("okc/pg_store", f"127.0.0.1:{port}:stale")
    timeout = dt.timedelta(seconds=30)
    joined: dict[str, object] = {}

    def rank1() -> None:
        joined["store"] = rendezvous.fresh_store(1, timeout)

    thread = threading.Thread(target=rank1)
    thread.start()  # reads the stale entry first, and again until rank 0 writes its own
    threading.Event().wait(1.0)
    store0 = rendezvous.fresh_store(0, timeout)
    thread.join(30)
    assert not thread.is_alive()
    store0.set("gloo/address", "rank0")
    store1 = joined["store"]
    assert isinstance(store1, dist.PrefixStore)
    assert store1.get("gloo/address") == b"rank0"  # the same, fresh store
    assert not other.check(["okc/gloo/address"])  # nothing went to the stale entry's store
    assert rendezvous.round_id() not in ("stale", "0")
    assert agent.get("okc/pg_store").decode().endswith(rendezvous.round_id())


def test_without_rank_0_the_join_says_so(agent: dist.TCPStore) -> None:
    agent.set("okc/pg_store", f"127.0.0.1:{_dead_port()}:stale")
    with pytest.raises(RuntimeError, match="rank 0 of this torchrun round published no store"):
        rendezvous.fresh_store(1, dt.timedelta(seconds=1))


def test_outside_torchrun_the_round_is_the_restart_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OKC_ROUND", raising=False)
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "3")
    assert not rendezvous.uses_agent_store()
    assert rendezvous.round_id() == "3"
