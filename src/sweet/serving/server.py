"""Running the app: one uvicorn process (``--backend local``) or a Ray Serve deployment (``--backend ray``).

Local: uvicorn on ``host:port`` (127.0.0.1 unless told otherwise). SIGTERM or Ctrl-C: uvicorn stops accepting
connections, waits for the requests in flight (at most ``graceful_seconds``), then the app's lifespan drains the
batching queue and stops the model thread, and the process exits 0.

Ray: the same app (:func:`sweet.serving.app.create_app`, with its own dynamic batching) as a Ray Serve deployment
of ``replicas`` replicas, each loading the run itself, behind Ray Serve's HTTP proxy on ``host:port``, which
spreads requests over the replicas. Ray starts a local instance unless ``ray_address`` (or ``RAY_ADDRESS``) names
a cluster; on a cluster every node needs sweet installed and the run directory at the same path.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from ..errors import SweetError, install_hint
from ..loader import is_exported

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_port(port: int) -> int:
    if not 0 <= int(port) <= 65535:
        raise SweetError(f"port must be in 0..65535, got {port}")
    return int(port)


def check_port_free(host: str, port: int) -> None:
    """Refuse, in one line, a ``host:port`` that a server cannot bind because another process listens there, so
    that ``sweet serve`` fails before it loads the model rather than after. Binds (and closes at once) a socket
    the way uvicorn's server does: every address ``host`` resolves to, with ``SO_REUSEADDR`` (a port whose old
    connections linger in TIME_WAIT is free). Port 0 (any free port) is always free."""
    port = check_port(port)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SweetError(f"cannot serve on host {host!r}: {exc.strerror}; use 127.0.0.1 (this machine only) or "
                         "0.0.0.0 (every interface)") from None
    for family, kind, proto, _, address in dict.fromkeys(infos):  # getaddrinfo may repeat an address
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does for "::"
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise SweetError(f"port {port} on {host} is already in use; pick another with --port N "
                                     "(or stop the process that listens there)") from None
                if exc.errno == errno.EACCES:
                    raise SweetError(f"no permission to listen on port {port} on {host} (ports below 1024 need "
                                     "root); pick another with --port N") from None
                raise SweetError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; use --host 127.0.0.1 "
                                 "(this machine only) or 0.0.0.0 (every interface)") from None


def serve_local(app, host: str = "127.0.0.1", port: int = 8000, graceful_seconds: float = 30.0,
                log_level: str = "warning", on_ready=None) -> None:
    """Run ``app`` with uvicorn until SIGTERM/SIGINT; return after a graceful shutdown (exit code 0 for the CLI)."""
    import uvicorn  # an optional extra (sweet[serve]); imported here so that importing this module needs none

    class Server(uvicorn.Server):
        # uvicorn re-raises the signal it shut down for once it has finished, which ends the process with
        # "killed by SIGTERM". A graceful shutdown is the whole answer to SIGTERM here: exit normally.
        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started and on_ready is not None:
                on_ready()

    config = uvicorn.Config(app, host=host, port=check_port(port), log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=graceful_seconds, lifespan="on")
    server = Server(config)
    server.run()
    if not server.started:
        raise SweetError(f"could not start the server on {host}:{port} (is the port in use? see the log above)")


def serve_ray(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
              cpus_per_replica: float = 1.0, threads: int | None = None, ray_address: str | None = None,
              app_options: dict | None = None, load_options: dict | None = None, on_ready=None,
              stop: threading.Event | None = None) -> None:
    """Deploy the app on Ray Serve with ``replicas`` replicas and serve until SIGTERM/SIGINT (or ``stop`` is set);
    then shut the deployment (and a local Ray instance) down."""
    if replicas < 1:
        raise SweetError(f"--replicas must be positive, got {replicas}")
    if cpus_per_replica <= 0:
        raise SweetError(f"CPUs per replica must be positive, got {cpus_per_replica}")
    from .app import (
        check_app_options,  # needs FastAPI, an optional extra (sweet[serve])
    )

    # wrong options or a wrong run directory fail here, in one line, not inside every replica
    check_app_options(**dict(app_options or {}))
    run_dir = str(Path(run_dir).resolve())
    if not is_exported(run_dir):  # an exported ONNX folder is checked by its manifest, in the replicas
        from ..rundir import model_dir_of  # (torch) only for a run directory: an ONNX-only image never gets here

        model_dir_of(run_dir)
    try:  # Ray Serve is an optional extra (sweet[serve]), and slow to import
        import ray
        from ray import serve
    except ImportError as exc:
        raise SweetError(f"--backend ray needs Ray Serve: {install_hint('serve')} ({exc})") from None
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            need = int(max(1, replicas * cpus_per_replica + 0.999))
            ray.init(num_cpus=max(os.cpu_count() or 1, need), include_dashboard=False, log_to_driver=False)
    deployment = make_deployment(replicas, cpus_per_replica)
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": check_port(port)})
        serve.run(deployment.bind(run_dir, dict(app_options or {}), dict(load_options or {}), threads),
                  name="sweet", route_prefix="/", blocking=False)
        if on_ready is not None:
            on_ready()
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            serve.shutdown()
        finally:
            if started_here:
                ray.shutdown()


def make_deployment(replicas: int, cpus_per_replica: float):
    """The Ray Serve deployment class: each replica builds :func:`create_app` for the run (late-bound ingress)."""
    from ray import serve  # an optional extra (sweet[serve]), and slow to import

    @serve.deployment(name="sweet", num_replicas=int(replicas), ray_actor_options={"num_cpus": float(cpus_per_replica)},
                      max_ongoing_requests=1024)
    @serve.ingress()
    class SweetReplica:
        def __init__(self, run_dir: str, app_options: dict, load_options: dict, threads: int | None):
            if threads and load_options.get("runtime", "torch") == "torch":  # ONNX Runtime: load's threads=
                import torch  # not imported by an ONNX-only replica (its image may have no torch)

                torch.set_num_threads(int(threads))
            from sweet.serving.app import (
                create_app,  # FastAPI: an optional extra, imported where it is used
            )

            self._sweet_app = create_app(run_dir, **app_options, **load_options)

        def __serve_build_asgi_app__(self):
            return self._sweet_app

    return SweetReplica


def announce(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
