"""Connecting to Ray: an existing cluster, the warm local instance (`cnnjobs up`), or the embedded local instance;
Ray's log lines go to the run's logs.

The terminal belongs to cnnjobs' own progress view, so Ray's driver-side loggers write to `<run>/logs/ray.log`
and worker output stays in Ray's session logs (`log_to_driver=False`), whose folder is recorded in the run's logs.
Until the run folder exists (checks come first), Ray's lines are held in memory and written there once it does.
Local instances listen on 127.0.0.1 only (`cnnjobs/localhost.py`).
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import ray
import ray._private.worker as ray_worker  # private: the hook for raylet messages
import ray.data

from cnnjobs.errors import JobError
from cnnjobs.leftovers import stop_orphans
from cnnjobs.localhost import LOOPBACK, local_cpus, loopback_only

_LOGGERS = ("ray", "cnnjobs", "py.warnings")
_HELD_LINES = 10_000
@dataclass
class RaySession:
    """The Ray instance a run uses: whether it is on this machine alone, and where its log lines go."""

    local: bool  # a single-node instance on this machine (the embedded one, or `ray start --head` here)
    started: bool  # started by this session (and stopped at its end)
    _held: logging.handlers.MemoryHandler
    where: str = ""  # which instance, in words: recorded in the summary and shown by `plan`

    def attach(self, logs_dir: str) -> None:
        """Write Ray's log lines (those held so far, and all later ones) to `<logs_dir>/ray.log`."""
        os.makedirs(logs_dir, exist_ok=True)
        target = logging.FileHandler(os.path.join(logs_dir, "ray.log"))
        target.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._held.setTarget(target)
        self._held.flush()
        self._held.capacity = 1  # from now on every line goes straight to the file
        try:
            session = ray_worker._global_node.get_session_dir_path()  # local node only
        except AttributeError:
            return
        with open(os.path.join(logs_dir, "ray_session.txt"), "w") as out:
            out.write(f"worker logs: {os.path.join(session, 'logs')}\n")


@contextmanager
def _logs_held(handler: logging.Handler) -> Iterator[None]:
    """Send Ray's driver-side output (loggers, warnings, raylet error pushes) to `handler` for the duration."""
    handler.setLevel(logging.INFO)  # ray.data logs at DEBUG otherwise
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate) for name in _LOGGERS}
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    logging.getLogger("cnnjobs").setLevel(logging.INFO)
    logging.captureWarnings(True)
    printer = getattr(ray_worker, "print_to_stdstream", None)
    ray_worker.print_to_stdstream = _log_stream  # raylet messages ("worker died ...") would go to stdout
    try:
        yield
    finally:
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate
        logging.captureWarnings(False)
        if printer is not None:
            ray_worker.print_to_stdstream = printer
        handler.close()


def _log_stream(data: dict, ignore_prefix: bool = False) -> None:
    for line in data.get("lines", []):
        logging.getLogger("ray.driver_stream").warning("[pid %s] %s", data.get("pid"), line)


def _quiet_ray_children() -> None:
    """Drop the console handlers Ray's sub-loggers install themselves (e.g. on `import ray.data`)."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.startswith("ray."):
            logger.handlers[:] = [h for h in logger.handlers
                                  if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler)]
            logger.propagate = True


def _single_local_node() -> bool:
    """Whether the connected cluster is one node, and it is the one this driver runs on."""
    alive = [node for node in ray.nodes() if node.get("Alive")]
    return len(alive) == 1 and alive[0]["NodeID"] == ray.get_runtime_context().get_node_id()


def _connect(address: str, options: dict) -> None:
    """`ray.init` on an existing instance, sending the token when one is at hand: Ray enables token authentication
    by itself only for an instance it finds without an address, and `cnnjobs up` or a cluster's head started with
    Ray 2.60's default asks for one. A refused connection is one line."""
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    try:
        ray.init(address=address, **options)
    except ConnectionError as exc:
        cause = exc.__cause__ or exc
        why = "it refused the token (copy the head's ~/.ray/auth_token, or set RAY_AUTH_TOKEN)" \
            if "InvalidAuthToken" in str(cause) or "Authentication" in str(cause) else str(exc).splitlines()[0]
        raise JobError(f"cannot connect to the Ray instance at {address}: {why}") from None


@contextmanager
def ray_session(address: str | None = None, workers: int = 1, cpus_per_worker: float = 1.0) -> Iterator[RaySession]:
    """Use the Ray cluster at `address` / `RAY_ADDRESS`, else the warm local instance (`cnnjobs up`), else start
    a local one and stop it afterwards. A Ray instance already initialized in this process (e.g. by a test session)
    is used as it is.
    """
    from cnnjobs import local_ray

    held = logging.handlers.MemoryHandler(_HELD_LINES, flushLevel=logging.CRITICAL + 1)
    started = False
    target = address or os.environ.get("RAY_ADDRESS")
    warm = None if target or ray.is_initialized() else local_ray.running()
    on_loopback = not target or target.split("://")[-1].rsplit(":", 1)[0] in (LOOPBACK, "localhost")
    with _logs_held(held), (loopback_only() if on_loopback else contextlib.nullcontext()):
        _quiet_ray_children()
        if not ray.is_initialized():
            common = {"log_to_driver": False, "configure_logging": True, "logging_level": logging.INFO}
            if target or warm:
                _connect(target or warm.address, common)
            else:
                stopped = stop_orphans()  # a killed driver's agents would hold the ports this instance wants
                if stopped:
                    logging.getLogger("cnnjobs").info("stopped %d process(es) of a Ray instance whose driver is "
                                                      "gone", stopped)
                ray.init(address="local", num_cpus=local_cpus(workers, cpus_per_worker), include_dashboard=True,
                         dashboard_host=LOOPBACK, _node_ip_address=LOOPBACK, **common)
                started = True
        _quiet_ray_children()
        ray.data.DataContext.get_current().enable_progress_bars = False
        if started:
            where = "a local Ray instance started for this run (cnnjobs up keeps one warm)"
        elif warm or target:
            where = f"the warm local instance at {warm.address} (cnnjobs up)" if warm else \
                f"the Ray cluster at {target}"
        else:
            where = "the Ray instance of this process"
        try:
            yield RaySession(local=started or _single_local_node(), started=started, _held=held, where=where)
        finally:
            if started:
                ray.shutdown()
