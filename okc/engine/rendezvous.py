"""The process group's store under torchrun: a fresh one for every round of its rendezvous.

Since torch 2.5 torchrun's c10d rendezvous shares its agent's TCPStore with the workers
(``TORCHELASTIC_USE_AGENT_STORE``) and ``init_process_group("env://")`` uses it without a
per-attempt prefix. That store outlives the workers, so after a restart (a worker died, a node
joined) the new workers find the old workers' keys: gloo reads a dead peer's address and fails
with "Connection refused", or waits for a peer that writes under another key and hangs
(pytorch/pytorch#135712; ``TORCHELASTIC_RESTART_COUNT`` cannot name the attempt, each node
counts its own restarts). okc cannot set ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` for the
agents the user started, so it does what that switch does, from inside the workers:

rank 0 starts a TCPStore of its own and publishes ``host:port:nonce`` in the agent's store; the
other ranks read it, connect, and check that the store holds the nonce. A stale entry names a
store that died with its rank 0 (refused, or without the nonce), so they read again until the
new rank 0 has written its entry. The nonce also names the round: ``round_id()`` keys what the
ranks of one round publish in the agent's store (``okc.launch.rank_failures``).
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid

import torch.distributed as dist

_ENTRY = "okc/pg_store"  # in the agent's store: rank 0's store of the current round
_NONCE = "okc/nonce"  # in rank 0's store: proves the entry is this round's
_ROUND = "OKC_ROUND"  # exported: this round's nonce
_POLL_S = 0.2


def uses_agent_store() -> bool:
    """Whether ``init_process_group("env://")`` would use torchrun's shared agent store."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"


def agent_store(timeout_s: float) -> dist.TCPStore | None:
    """A client of the job's long-lived store (torchrun's agent hosts it at
    ``MASTER_ADDR:MASTER_PORT``), or None when there is none or it cannot be reached."""
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port:
        return None
    try:
        return dist.TCPStore(host, int(port), is_master=False,
                             timeout=dt.timedelta(seconds=timeout_s))  # fmt: skip
    except Exception:  # the store went with the job
        return None


def round_id() -> str:
    """This round's id (its rank 0's nonce) under torchrun's agent store, else the restart
    count torchrun exported (each new process group is then a new store)."""
    return os.environ.get(_ROUND) or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")


def fresh_store(rank: int, timeout: dt.timedelta) -> dist.Store:
    """The store this round's process group uses (see the module's docstring)."""
    shared = agent_store(timeout.total_seconds())
    if shared is None:
        raise RuntimeError(
            "torchrun's store at MASTER_ADDR:MASTER_PORT cannot be reached "
            f"({os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')})"
        )
    if rank == 0:
        store = dist.TCPStore("0.0.0.0", 0, is_master=True, wait_for_workers=False,
                              timeout=timeout)  # fmt: skip
        nonce = uuid.uuid4().hex
        store.set(_NONCE, nonce)
        shared.set(_ENTRY, f"{os.environ['MASTER_ADDR']}:{store.port}:{nonce}")
    else:
        store, nonce = _join(shared, timeout)
    os.environ[_ROUND] = nonce
    return dist.PrefixStore("okc", store)


def _join(shared: dist.Store, timeout: dt.timedelta) -> tuple[dist.TCPStore, str]:
    deadline = time.monotonic() + timeout.total_seconds()
    shared.wait([_ENTRY], timeout)
    while True:
        host, port, nonce = shared.get(_ENTRY).decode().rsplit(":", 2)
        try:
            store = dist.TCPStore(host, int(port), is_master=False,
                                  timeout=dt.timedelta(seconds=2))  # fmt: skip
            if store.check([_NONCE]) and store.get(_NONCE).decode() == nonce:
                store.set_timeout(timeout)
                return store, nonce
        except Exception:  # a stale entry: its store died with the last round's rank 0
            pass  # (a live store at that port is another program's: it lacks the nonce)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"rank 0 of this torchrun round published no store within {timeout} "
                f"(last entry {host}:{port})"
            )
        time.sleep(_POLL_S)
