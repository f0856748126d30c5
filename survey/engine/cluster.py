"""Starting or joining Ray. The embedded default stays on loopback: nothing listens on the network."""

from __future__ import annotations

import logging
import os

import ray

#: Ray's logger that announces, on every start of a local cluster, that token authentication is on (it stays on).
_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"

#: Ray replaces 127.0.0.1 by the machine's outward address; any other 127.x address is kept as given.
LOOPBACK_NODE_IP = "127.0.0.2"


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), or start an embedded local one on loopback.

    Returns True when this call started Ray (so the caller shuts it down), False when Ray was
    already running in this process or a cluster was joined.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, log_to_driver=False)
        return True
    kwargs = {"num_cpus": num_cpus} if num_cpus else {}
    if num_gpus is not None:
        kwargs["num_gpus"] = num_gpus
    notice = logging.getLogger(_AUTH_NOTICE_LOGGER)
    level = notice.level
    notice.setLevel(logging.ERROR)   # the embedded cluster is ours, on loopback: its token notice is noise
    try:
        ray.init(address="local", _node_ip_address=LOOPBACK_NODE_IP, include_dashboard=False,
                 log_to_driver=False, configure_logging=False, **kwargs)
    finally:
        notice.setLevel(level)
    return True
