"""Learning processes across several TFF workers: TFF's shipped `worker_binary` (a gRPC executor
service), on this machine or others, driven by this process.

`Cluster("host:port,host:port")` (or `"local:N"`, N workers started here; `checks.workers`) checks that every worker
answers, then installs TFF's mergeable execution context over them: each round's clients are split
into contiguous chunks, one per worker; each worker runs the broadcast, its clients' work and a
partial aggregation; the driver merges the partial aggregates and runs the server step once. Each
worker is driven from its own thread, so the workers compute at the same time (TFF's stock async
contexts would drive them one after the other). A round that does not finish within
`round_timeout` seconds (a worker died and stays down: TFF would retry forever) fails with
`WorkerFailure` naming the worker; the channels are closed so the blocked call ends. A worker
restarted on the same address within the round is used again (TFF's retry).

SECURITY: a worker binds every network interface, without TLS or authentication, and runs any
computation sent to it. Keep workers on a private network (README, "Past one machine").
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from typing import Callable, Sequence

import grpc
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import checks, compat
from tff_sparsify.errors import RunError

WORKER_BINARY = os.path.join(os.path.dirname(tff.__file__), "data", "worker_binary")
GRPC_MESSAGE_MEGABYTES = 2000  # As TFF's own local runtime.
GRPC_OPTIONS = [(f"grpc.{name}", GRPC_MESSAGE_MEGABYTES * 1_000_000)
                for name in ("max_message_length", "max_receive_message_length", "max_send_message_length")]
DEFAULT_ROUND_TIMEOUT = 600.0
READY_TIMEOUT = 30.0
STOP_SECONDS = 5.0
SECURITY_WARNING = ("WARNING: a TFF worker listens on every network interface without TLS or authentication "
                    "and runs any computation sent to it; keep it on a private network (README, \"Past one machine\")")


class WorkerFailure(RunError):
    """A worker did not answer: at start, or during a round (then the round is not applied)."""


def serve(port: int, max_concurrent_calls: int | None = None, say: Callable[[str], None] = print) -> int:
    """Runs one worker at `port` until it ends or this process gets SIGTERM / SIGINT (then the worker
    is stopped: SIGTERM, then SIGKILL after `STOP_SECONDS`); returns the worker's exit status."""
    worker = compat.worker_process(worker_command(port, max_concurrent_calls))
    say(f"TFF worker (pid {worker.pid}) listening on [::]:{port}, every network interface; stop it with "
        f"Ctrl-C or SIGTERM. {SECURITY_WARNING}")
    try:
        while worker.poll() is None:
            time.sleep(0.2)
        return worker.returncode
    except KeyboardInterrupt:  # The command line turns SIGTERM into this too.
        return 0
    finally:
        LocalWorkers.stop([worker])
        say(f"TFF worker on port {port} stopped")


def worker_command(port: int, max_concurrent_calls: int | None = None) -> list[str]:
    """The command line of TFF's `worker_binary` serving on every interface at `port`."""
    calls = max_concurrent_calls or len(os.sched_getaffinity(0))
    return [WORKER_BINARY, f"--port={port}", f"--grpc_max_message_length_megabytes={GRPC_MESSAGE_MEGABYTES}",
            f"--max_concurrent_computation_calls={calls}"]


def wait_ready(addresses: Sequence[str], timeout: float = READY_TIMEOUT) -> None:
    """Raises `WorkerFailure` naming every worker that does not accept a gRPC connection within
    `timeout` seconds."""
    deadline, missing = time.monotonic() + timeout, []
    for address in addresses:
        with grpc.insecure_channel(address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=max(0.1, deadline - time.monotonic()))
            except grpc.FutureTimeoutError:
                missing.append(address)
    if missing:
        raise WorkerFailure(f"no TFF worker answers at {', '.join(missing)} (waited {timeout:g} s); start one "
                            "there with `tff-sparsify worker --port PORT`, or check the address and the network")


class LocalWorkers:
    """`count` workers on this machine, on free ports, each limited to `calls_per_worker` concurrent
    computations and, with `cpus` (one `taskset` CPU list per worker, e.g. ["0", "1"]), pinned to its
    CPUs; they die with this process (compat item 8) and `close` stops them (SIGTERM, then SIGKILL
    after `STOP_SECONDS`)."""

    def __init__(self, count: int, calls_per_worker: int = 1, cpus: Sequence[str] | None = None):
        if cpus is not None and len(cpus) != count:
            raise ValueError(f"cpus must hold one CPU list per worker ({count}), got {list(cpus)}")
        self.processes: list[subprocess.Popen] = []
        self.addresses: list[str] = []
        try:
            for i, port in enumerate(_free_ports(count)):
                pin = [shutil.which("taskset") or "/usr/bin/taskset", "-c", cpus[i]] if cpus else []
                self.processes.append(compat.worker_process([*pin, *worker_command(port, calls_per_worker)],
                                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                self.addresses.append(f"localhost:{port}")
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def close(self) -> None:
        self.stop(self.processes)

    @staticmethod
    def stop(processes: Sequence[subprocess.Popen]) -> None:
        """SIGTERM to each running process, then SIGKILL to any still running after `STOP_SECONDS`."""
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class _WorkerContext(tff.framework.AsyncContext):
    """TFF's context for one worker (`RemoteExecutor` over a gRPC channel, as TFF's local runtime
    builds it) whose calls run in their own thread, so that the mergeable context drives the workers
    concurrently."""

    def __init__(self, address: str):
        self.address = address
        self.channel = grpc.insecure_channel(address, GRPC_OPTIONS)
        self.state = None  # The channel's last connectivity.
        self.channel.subscribe(self._on_state, try_to_connect=True)
        stub = tff.framework.RemoteExecutorGrpcStub(self.channel)

        def stack_fn(cardinalities):
            cardinalities.setdefault(tff.CLIENTS, 0)  # TFF's default when no argument is at CLIENTS.
            executor = tff.framework.RemoteExecutor(stub)
            executor.set_cardinalities(cardinalities)
            return executor

        self.sync_context = tff.framework.SyncExecutionContext(
            executor_fn=tff.framework.ResourceManagingExecutorFactory(stack_fn),
            compiler_fn=tff.backends.native.desugar_and_transform_to_native,
            transform_args=tff.tensorflow.transform_args,
            transform_result=tff.tensorflow.transform_result,
        )
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"tff-worker-{address}")
        self.busy = False

    def _on_state(self, state) -> None:
        self.state = state

    def _invoke(self, comp, arg):
        self.busy = True
        try:
            return self.sync_context.invoke(comp, arg)
        finally:
            self.busy = False

    async def invoke(self, comp, arg):
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._invoke, comp, arg)

    def close(self) -> None:
        """Closes the channel: a call blocked in TFF's retry loop then fails and ends."""
        self.channel.close()
        self._thread.shutdown(wait=False)


class Cluster:
    """TFF's execution context over several workers, as a context manager (see the module).

        with Cluster("local:2") as cluster:
            state = cluster.call(process.next, state, client_data)

    Inside the `with`, TFF computations called from this thread run on the workers; `call` runs one
    with the round watchdog (any thread)."""

    def __init__(self, workers: str | Sequence[str], *, round_timeout: float = DEFAULT_ROUND_TIMEOUT,
                 ready_timeout: float | None = None):
        parsed = checks.workers("workers", workers) if isinstance(workers, str) else list(workers)
        self.round_timeout = float(round_timeout)
        self.ready_timeout = READY_TIMEOUT if ready_timeout is None else float(ready_timeout)
        self._local_count = parsed if isinstance(parsed, int) else 0
        self.addresses: list[str] = [] if self._local_count else parsed
        self.local: LocalWorkers | None = None
        self._workers: list[_WorkerContext] = []
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> Cluster:
        try:
            if self._local_count:
                self.local = LocalWorkers(self._local_count)
                self._exit.callback(self.local.close)
                self.addresses = self.local.addresses
            wait_ready(self.addresses, self.ready_timeout)
            self._workers = [_WorkerContext(a) for a in self.addresses]
            self._exit.callback(self._close_channels)
            self.context = tff.backends.native.create_mergeable_comp_execution_context(self._workers)
            self._exit.enter_context(self.installed())
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._exit.close()

    @contextlib.contextmanager
    def installed(self):
        """This cluster as TFF's context in the calling thread (TFF's context stack is per thread)."""
        with tff.framework.get_context_stack().install(self.context):
            yield

    def call(self, function: Callable, *args):
        """`function(*args)` on the workers, in a thread; after `round_timeout` seconds without an
        answer the channels are closed and `WorkerFailure` names the workers that did not answer."""
        done: concurrent.futures.Future = concurrent.futures.Future()

        def target():
            try:
                with self.installed():
                    done.set_result(function(*args))
            except BaseException as error:  # pylint: disable=broad-except
                done.set_exception(error)

        thread = threading.Thread(target=target, name="tff-round", daemon=True)
        thread.start()
        try:
            return done.result(self.round_timeout)
        except concurrent.futures.TimeoutError:
            pass
        silent = [w.address for w in self._workers if w.state != grpc.ChannelConnectivity.READY]
        busy = [w.address for w in self._workers if w.busy]
        self._close_channels()
        thread.join(STOP_SECONDS)
        named = silent or busy or self.addresses
        raise WorkerFailure(
            f"the round did not finish within round_timeout = {self.round_timeout:g} s: TFF worker(s) "
            f"{', '.join(named)} {'unreachable' if silent else 'did not answer'}; the round is not applied "
            "(a run resumes from its last checkpoint when started again)")

    def check_readable(self, paths: Sequence[str]) -> None:
        """Raises `WorkerFailure` naming the first worker that cannot read one of `paths` (the clients'
        data files, which every worker must see at the same path)."""
        if not paths:
            return

        @tff.tensorflow.computation
        def readable():
            return tf.stack([tf.io.gfile.exists(p) for p in paths])

        for worker in self._workers:
            with tff.framework.get_context_stack().install(worker.sync_context):
                found = readable()
            missing = [p for p, ok in zip(paths, found) if not ok]
            if missing:
                raise WorkerFailure(
                    f"TFF worker {worker.address} cannot read {missing[0]} ({len(missing)} of {len(paths)} client "
                    "data files): every worker must see the clients' files at the same path, e.g. on a shared "
                    "filesystem; set TMPDIR of the driver to a directory every worker mounts at that path")

    def _close_channels(self) -> None:
        for worker in self._workers:
            worker.close()


def check_splittable(computation: tff.Computation, algorithm: str) -> None:
    """Raises a ValueError naming `algorithm` unless TFF can split `computation` across workers (one
    logical aggregation per round; an aggregation that depends on another cannot be split)."""
    try:
        tff.backends.native.compile_to_mergeable_comp_form(computation)
    except (TypeError, ValueError) as error:
        raise ValueError(f"algorithm {algorithm!r} cannot run across workers: its round cannot be split into "
                         f"per-worker parts with one aggregation ({type(error).__name__}: "
                         f"{str(error).splitlines()[0]}); run it without --workers") from None


def _free_ports(count: int) -> list[int]:
    """`count` TCP ports free on this machine now (the OS picks them)."""
    sockets = [socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
