"""RQ, configured for this service: the worker keeps only the transport.

- Intake (worker.queue.intake): every job's envelope is checked before RQ prepares it;
  a bad job is answered there and never reaches RQ. Jobs are JSON; pickle never loads.
- The job context (worker.queue.context) is built once, here, at worker start: settings,
  the warmed engine, Redis and the publisher. `jobs.scan` runs over it.
- Lease, heartbeat and watchdog: dead workers are noticed within seconds, not RQ's default
  ten minutes or more (short heartbeats, a short maintenance interval), and a retry budget
  on every job so an abandoned one is queued again instead of only being marked failed.
- Final failures (exceptions, timeouts, a killed work-horse, a worker that vanished) are
  published with a stable error code chosen by the exception's type, never its text, by
  worker.queue.outcome, which also counts and logs every end of a job.
- A job whose result is not ok (a missing image, a refused reference) is a failed job to RQ
  too: its failed registry, with the code and message as JSON, never retried.
- Redis refusing writes (full under `noeviction`, or a replica after a failover), or away
  for a moment (restarting, or failing over: a Sentinel-managed client reconnects to the
  promoted replica on its next try), costs no worker and no job: RQ quit its work loop
  on the first refused write, and the pool respawned the worker, engine and all, dozens
  of times a minute (issue 18, point 2). Here a refused write or a lost connection is
  waited out with backoff wherever RQ's loop makes one: a popped job is registered once
  Redis takes writes again, and a job whose bookkeeping is refused after it ran is left
  to its lease (RQ's maintenance runs it again; its result was published once, by
  delivery token).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog
from rq import Queue, SimpleWorker, Worker, worker_registration
from rq.exceptions import AbandonedJobError, DeserializationError
from rq.job import Job
from rq.registry import clean_registries
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now as utcnow
from rq.worker import WorkerStatus

from worker.engine.detector.detector import Detector
from worker.engine.engine import Engine, return_memory_to_os
from worker.errors import ErrorCode, ScanFailed
from worker.queue import context, outcome, payloads, runtime
from worker.queue.envelope import JobRejected
from worker.queue.intake import QrQueue
from worker.queue.job import QrJob, delivery_of
from worker.queue.replies import TRANSIENT, WRITE_REFUSED, wait_for_writes
from worker.queue.results import JobResult
from worker.queue.stopping import GATE
from worker.settings import Settings

__all__ = ["QrJob", "QrQueue", "QrSimpleWorker", "QrWorker", "worker_class"]

log = structlog.get_logger("worker")

# Seconds a heartbeat outlives its interval: long enough for a busy machine, short
# enough that a dead worker's job is requeued well inside two minutes.
HEARTBEAT_GRACE = 10
JOB_MONITORING_INTERVAL = 5
WATCHDOG_GRACE = 5
REUSED = (
    "the job hash holds another enqueue now (a new job reusing the id, or RQ's requeue of "
    "this one): RQ's writes after this run leave it alone"
)
# Seconds a simple worker waits for its next job before it gives the memory its jobs
# used back to the OS: long enough that a busy worker keeps reusing it (faulting the
# detectors' 45 MB in again costs the next page that runs both about 20 ms of CPU, half
# as much again), short enough that an idle pool is small.
IDLE_TRIM_S = 5.0
# Longest wait of the thread that listens for RQ's commands (RQ's own is 60 s): shutdown
# joins that thread, so this bounds how long a stopping worker can wait for it.
COMMAND_LISTENER_WAKE_S = 0.5
# How long a worker whose engine failed to load waits for its scheduler to stop on SIGTERM.
SCHEDULER_STOP_S = 2.0
# Running these again cannot help: the input or the job itself is the problem.
NOT_RETRIED = frozenset(
    {ErrorCode.REFUSED_JOB, ErrorCode.INVALID_PAYLOAD, ErrorCode.DEADLINE_EXCEEDED}
)


class QrWorkerMixin:
    """Our policies, on top of either of RQ's execution models (see QrWorker)."""

    job_monitoring_interval: int
    connection: Any
    name: str
    # RQ waits after a lost connection 1 s, then twice as long each time up to 60 s. A
    # Sentinel failover takes 2-3 s to promote a replica; attempts that failed meanwhile
    # left a worker 7 or 15 s before its next (the failover test's bound of 10 s for the
    # workers' first result on the new master: 14.4 s once, 2026-12-07). Capped here, a
    # worker is back within this much of the promotion; an idle fleet then tries a Redis
    # that stays down once every few seconds per worker.
    max_connection_wait_time = 4.0
    _stopped_job_id: str | None
    _stop_requested: bool
    _state: str
    last_cleaned_at: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = Settings.from_env()
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = QrJob
        kwargs["queue_class"] = QrQueue
        kwargs["maintenance_interval"] = settings.recovery_interval
        kwargs["job_monitoring_interval"] = JOB_MONITORING_INTERVAL
        # The dequeue timeout is worker_ttl - 15: keep it short so maintenance runs often.
        kwargs["worker_ttl"] = settings.recovery_interval + 15
        kwargs["exception_handlers"] = [record_failure]
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._settings = settings
        self._idle_trim: IdleTrim | None = None
        self._early_stop: int | None = None  # a stop that came before RQ's handlers

    def work(self, *args: Any, **kwargs: Any) -> bool:
        # The pool's stop (SIGINT) can come while this worker forks its scheduler and loads
        # its engine, before RQ's work loop installs its handlers. Raised as Python's
        # KeyboardInterrupt, it landed now and then in a fork's after-fork hook, where Python
        # ignores exceptions: the stop was lost, the worker went on to serve, and the pool
        # waited for it for ever (test_worker_stop's stop-while-loading test: 3 clean-clone
        # suites of 3, 2026-12-06). Until RQ's handlers are in, a stop is only recorded;
        # _install_signal_handlers then makes it.
        owner = os.getpid()

        def record(signum: int, frame: Any) -> None:
            if os.getpid() != owner:
                # A process forked meanwhile (RQ's scheduler) before it set its own.
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            self._early_stop = signum

        signal.signal(signal.SIGINT, record)
        signal.signal(signal.SIGTERM, record)
        # RQ forks its scheduler from one worker process at the start of work(). Forked
        # after the engine, it held a copy-on-write share of the whole warmed engine, and
        # kept the old copy of every page the worker wrote afterwards: about 75 MB more per
        # pool once the first job had run (issue 11). Forked first, it holds a bare worker.
        if kwargs.get("with_scheduler") and not args:
            formats = {k: kwargs[k] for k in ("date_format", "log_format") if k in kwargs}
            self._start_scheduler(  # type: ignore[attr-defined]
                kwargs.get("burst", False), kwargs.get("logging_level") or "INFO", **formats
            )
            kwargs["with_scheduler"] = False  # started; RQ's maintenance still restarts it
        try:
            self.load_engine()
            return super().work(*args, **kwargs)  # type: ignore[misc]
        except KeyboardInterrupt:
            # The pool's stop (SIGINT) came before RQ's work loop installed its handlers, so
            # RQ's teardown never ran: without it the scheduler forked above is never
            # stopped, and this process would wait for it at exit for ever.
            self.teardown()  # type: ignore[attr-defined]
            return False
        except Exception:
            # An engine that cannot load (a corrupt model) ends this worker, for the pool to
            # start again with backoff. The scheduler forked above outlived it, and this
            # process waited for it at exit for ever (multiprocessing joins its children):
            # a worker that did nothing, which the pool never replaced.
            # A scheduler only just forked may take SIGTERM before it handles it (and ignore
            # it, with the pool's handler it inherited): killed if it is still there soon.
            process = self._scheduler_process()
            if process is not None:
                process.terminate()
                process.join(SCHEDULER_STOP_S)
                if process.is_alive():
                    process.kill()
                    process.join()
            raise

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()  # type: ignore[misc]
        if self._early_stop is not None:
            rq: Any = self
            rq.request_stop(self._early_stop, None)

    def _scheduler_process(self) -> Any:
        """The process RQ's scheduler runs in, once started; else None."""
        rq: Any = self
        process = rq.scheduler._process if rq.scheduler is not None else None
        return process if process is not None and process.pid else None

    def register_birth(self) -> None:
        # A worker started (or respawned) while Redis is full waits here, engine loaded,
        # instead of exiting for the pool to start it again.
        attempt = 0
        while True:
            try:
                return super().register_birth()  # type: ignore[misc]
            except TRANSIENT as exc:
                wait_for_writes("register_birth", exc, attempt)
                attempt += 1

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:  # queued in a transaction: its caller handles the outcome
            return super().heartbeat(timeout, pipeline)  # type: ignore[misc]
        try:
            super().heartbeat(timeout)  # type: ignore[misc]
        except TRANSIENT as exc:
            # A missed beat only shortens the worker's key; the next one renews it.
            log.warning("heartbeat_refused", worker=self.name, error=str(exc)[:300])

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is not None:
            return super().set_state(state, pipeline)  # type: ignore[misc]
        try:
            super().set_state(state)  # type: ignore[misc]
        except TRANSIENT as exc:
            # What dashboards show; the state in memory (what RQ decides by) is set.
            log.warning("worker_state_refused", worker=self.name, state=state, error=str(exc)[:300])

    def run_maintenance_tasks(self) -> None:
        if self._stop_requested:
            # RQ's loop runs a due pass before it looks at the stop; the pass would start
            # the scheduler a stop request has just ended, and the stop would wait for it.
            return
        # Not cut short by a stop request: a pass moves jobs between lists and registries.
        GATE.hold()
        try:
            super().run_maintenance_tasks()  # type: ignore[misc]
        except TRANSIENT as exc:
            # Tried again at the next interval; a lock this pass took expires on its own
            # (QrQueue.acquire_maintenance_lock keeps it short).
            log.warning("maintenance_refused", worker=self.name, error=str(exc)[:300])
            self.last_cleaned_at = utcnow()
        finally:
            GATE.release()

    def check_for_suspension(self, burst: bool) -> None:
        # RQ's check renews the worker's key in the same transaction, which a full Redis
        # refuses whole. Nothing is in hand here: wait until Redis takes writes again.
        attempt = 0
        while True:
            try:
                return super().check_for_suspension(burst)  # type: ignore[misc]
            except TRANSIENT as exc:
                with GATE.interruptible():
                    wait_for_writes("suspension_check", exc, attempt)
                attempt += 1

    def clean_registries(self) -> None:
        # RQ's pass. A pass that ends well keeps its queue's lock until the next pass is due
        # (one pass an interval for the whole fleet); one cut off by a refused write
        # releases it, so that recovery does not wait for it to expire.
        rq: Any = self
        for queue in rq.queues:
            if queue.acquire_maintenance_lock():
                ended_well = False
                try:
                    rq.log.info(
                        "Worker %s: cleaning registries for queue: %s", self.name, queue.name
                    )
                    clean_registries(queue, rq._exc_handlers)
                    worker_registration.clean_worker_registry(queue)
                    queue.intermediate_queue.cleanup(self, queue)
                    ended_well = True
                finally:
                    with contextlib.suppress(redis.RedisError):
                        if ended_well:
                            queue.keep_maintenance_lock()
                        else:
                            queue.release_maintenance_lock()
        self.last_cleaned_at = utcnow()

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        # LMOVE is refused by a full Redis before anything moves; a job popped otherwise is
        # kept by QrQueue.dequeue_any until it is admitted. Nothing popped is lost here.
        # A stop request may end this wait, except while a job is in hand (the pop holds it).
        GATE.release()
        attempt = 0
        with GATE.interruptible():
            while True:
                try:
                    return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)  # type: ignore[misc]
                except WRITE_REFUSED as exc:
                    wait_for_writes("dequeue", exc, attempt)
                    attempt += 1

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)  # type: ignore[misc]
        except TRANSIENT as exc:
            # Past registration (prepare_execution waits for it): the job is in the started
            # registry, and once its lease lapses RQ's maintenance runs it again.
            wait_for_writes("job_bookkeeping", exc, 0, job_id=job.id)
        finally:
            GATE.release()

    def _shutdown(self) -> None:
        """RQ's stop request, from its signal handler. A busy worker finishes its job first
        (RQ's own path); an idle one stops where no job can be lost (worker.queue.stopping)."""
        rq: Any = self
        self._stop_requested = True
        # RQ's scheduler sleeps a second between passes and stops after its sleep: asked
        # now, it stops while this worker finishes (RQ's teardown joins it later). RQ's own
        # way, asking and joining here, held a running job (or this handler) that second.
        process = self._scheduler_process()
        if process is not None:
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGTERM)
        if rq.get_state() == WorkerStatus.BUSY:
            # Recorded for dashboards; a Redis away or full must not raise into the job.
            with contextlib.suppress(redis.RedisError):
                rq.set_shutdown_requested_date()
            return
        GATE.request()

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        attempt = 0
        while True:
            try:
                return super().prepare_job_execution(job, remove_from_intermediate_queue)  # type: ignore[misc]
            except WRITE_REFUSED as exc:
                wait_for_writes("job_start", exc, attempt, job_id=job.id)
                attempt += 1

    def subscribe(self) -> None:
        """RQ's command listener, waking every COMMAND_LISTENER_WAKE_S instead of 60 s.

        On shutdown RQ sends UNSUBSCRIBE, then stops the listener thread and joins it. A
        thread that read the reply before the stop flag was set (likely on a busy machine)
        went back to waiting up to 60 s for a subscription, and held the worker and the
        pool that long (issue 18, point 4).
        """
        rq: Any = self  # RQ's worker, which this mixin always comes with
        channel = rq.pubsub_channel_name
        rq.log.info("Worker %s: subscribing to channel %s", self.name, channel)
        rq.pubsub = self.connection.pubsub()
        rq.pubsub.subscribe(**{channel: rq.handle_payload})
        rq.pubsub_thread = rq.pubsub.run_in_thread(
            sleep_time=COMMAND_LISTENER_WAKE_S,
            daemon=True,
            exception_handler=rq._pubsub_exception_handler,
        )

    def load_engine(self) -> None:
        """Build and warm the engine, before the worker registers: a registered worker is
        a ready one. Horses inherit it."""
        if context.get() is not None:
            return
        settings = self._settings
        started = time.perf_counter()
        ctx = context.build(settings, runtime.connect(settings), self.name)
        ctx.engine.warm_up()
        context.install(ctx)
        # Warm-up grew the detectors' arena and left freed blocks in the heap (graph
        # optimisation): give them back before the worker waits for its first job.
        release_memory(ctx.engine)
        if isinstance(self, SimpleWorker):
            # Jobs run in this process: what they leave goes back once it is idle.
            self._idle_trim = IdleTrim(IDLE_TRIM_S, lambda: release_memory(ctx.engine))
            self._idle_trim.start()
        log.info(
            "engine_ready",
            backend=ctx.backend,
            model=ctx.model,
            model_threads=settings.model_threads,
            image_threads=settings.image_threads,
            stages=[stage.name for stage in ctx.engine.stages],
            ms=round((time.perf_counter() - started) * 1000.0, 1),
        )
        from worker import metrics  # here, in the worker process: see worker.metrics_env

        metrics.start("queue", ctx.backend, ctx.model)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        remaining = (job.timeout or context.current().settings.job_timeout) - working_time
        return int(max(1, min(remaining, self.job_monitoring_interval))) + HEARTBEAT_GRACE

    def prepare_execution(self, job: Job) -> Any:
        # The popped job is held until Redis takes its registration: in memory only, when
        # it came off several queues (BLPOP), so a stop request waits for it as for a
        # running job (RQ raises StopRequested at once in an idle worker).
        self._state = WorkerStatus.BUSY
        # Producers in other languages set no retry budget; give every job one, so a
        # job whose worker died is run again rather than only marked failed.
        budgeted = give_retry_budget(job)
        attempt = 0
        while True:
            executions = set(self.executions)  # type: ignore[attr-defined]
            try:
                return self._prepare_execution(job, budgeted)
            except TRANSIENT as exc:
                for stale in set(self.executions) - executions:  # type: ignore[attr-defined]
                    self.executions.pop(stale, None)  # type: ignore[attr-defined]
                wait_for_writes("job_registration", exc, attempt, job_id=job.id)
                attempt += 1

    def _prepare_execution(self, job: Job, budgeted: bool) -> Any:
        if budgeted:
            budget = {"retries_left": job.retries_left, "retry_intervals": "[0]"}
            if isinstance(job, QrJob):
                job.write_fields(budget)
            else:
                self.connection.hset(job.key, mapping=budget)
        if job.timeout is None:
            job.timeout = context.current().settings.job_timeout
        return super().prepare_execution(job)  # type: ignore[misc]

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        # Runs in the work-horse. The watchdog is a C thread: it fires even while a
        # decoder holds the GIL in native code, and exits the horse, which RQ then
        # handles as a failed run (retried while the budget lasts).
        # RQ's own timeout (a Python-level alarm) fires first and fails the job cleanly;
        # the watchdog, a little later, only ends a process stuck where Python cannot run.
        timeout = job.timeout or context.current().settings.job_timeout
        faulthandler.dump_traceback_later(timeout + WATCHDOG_GRACE, exit=True)
        # RQ's SimpleWorker sends no heartbeats while a job runs; without them a long job
        # would look abandoned, and a dead worker's job could only be recovered after its
        # whole timeout. A thread keeps the lease short and fresh instead.
        stop = self._heartbeat_thread(job, execution) if isinstance(self, SimpleWorker) else None
        if self._idle_trim is not None:
            self._idle_trim.busy()
        try:
            return super().perform_job(job, queue, execution)  # type: ignore[misc]
        finally:
            faulthandler.cancel_dump_traceback_later()
            if stop is not None:
                stop.set()
            if self._idle_trim is not None:
                self._idle_trim.idle()

    def _heartbeat_thread(self, job: Job, execution: Any) -> threading.Event:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.job_monitoring_interval):
                try:
                    self.maintain_heartbeats(job, execution)  # type: ignore[attr-defined]
                except Exception as exc:  # Redis away: the next beat tries again
                    log.warning("heartbeat_failed", job_id=job.id, error=repr(exc))

        threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True).start()
        return stop

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: Any, execution: Any
    ) -> None:
        # The result is out already; RQ's bookkeeping follows, and QrJob makes its writes
        # to the job hash only while the hash still holds this enqueue. Said here once:
        if hash_reused(job):
            log.info("job_hash_reused", job_id=job.id, detail=REUSED)
        failure = failed_result(job)
        if failure is not None and isinstance(job, QrJob):
            # A failed result (not_found, a corrupt image, ...) is a failed job to RQ's own
            # tools too: its failed registry, counted and requeued there. Never retried by
            # us: the input is the problem, and the result is out.
            job.failure_code, job.failure_message = failure
            job.outcome_published = True
            job.retries_left = 0
            self.handle_job_failure(job, queue, started_job_registry, execution=execution)
            return
        super().handle_job_success(job, queue, started_job_registry, execution)  # type: ignore[misc]

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        code, message = failure_of(job, exc_string, stopped=self._stopped_job_id == job.id)
        if isinstance(job, QrJob):  # RQ's failure text is ours (QrJob._handle_failure)
            job.failure_code, job.failure_message = code, message
        # A job can fail before it ever started (RQ's intermediate-queue cleanup after a
        # worker lost Redis mid-dequeue); it still deserves its retries.
        give_retry_budget(job)
        if code in NOT_RETRIED:
            job.retries_left = 0
        if hash_reused(job):
            # The hash, data included, holds another enqueue now (usually a new job reusing
            # the id). This one cannot be run again (RQ's retry would write it back over the
            # new job), so it gets its result now (a no-op if delivered before it failed).
            job.retries_left = 0
            log.warning("job_hash_reused", job_id=job.id, detail=REUSED, error=code.value)
        if isinstance(job, QrJob) and job.outcome_published:
            pass  # jobs.scan published this failure
        elif not (job.should_retry and self._stopped_job_id != job.id):
            publish_failure(job, code, message)
        else:
            log.warning("job_retry", job_id=job.id, error=code, retries_left=job.retries_left)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)  # type: ignore[misc]


def release_memory(engine: Engine) -> None:
    """Give back to the OS what the engine keeps between jobs for speed: the detectors'
    arena (worker.engine.detector.sessions) and the C heap's free blocks."""
    for stage in engine.stages:
        detector = getattr(stage, "detector", None)
        if isinstance(detector, Detector):
            detector.release()
    return_memory_to_os()


class IdleTrim(threading.Thread):
    """Calls `release` once the worker has been idle `after_s` since its last job.

    Between jobs the detectors' arena and the C heap keep what a job freed, so the next
    job reuses it without page faults; a worker that stays idle gives it back.
    """

    def __init__(self, after_s: float, release: Callable[[], None]) -> None:
        super().__init__(name="idle-trim", daemon=True)
        self.after_s = after_s
        self.release = release
        self._lock = threading.Lock()
        self._running = 0
        self._since: float | None = None  # when the last job ended; None: nothing to trim
        self.trims = 0

    def busy(self) -> None:
        with self._lock:
            self._running += 1

    def idle(self) -> None:
        with self._lock:
            self._running -= 1
            self._since = time.monotonic()

    def run(self) -> None:
        while True:
            time.sleep(self.after_s / 4)
            with self._lock:
                due = (
                    self._running == 0
                    and self._since is not None
                    and time.monotonic() - self._since >= self.after_s
                )
                if due:
                    self._since = None
            if due:
                try:
                    self.release()
                except Exception as exc:  # memory is not worth a worker: say so, go on
                    log.warning("idle_release_failed", error=repr(exc))
                self.trims += 1


class QrWorker(QrWorkerMixin, Worker):
    """QRW_WORKER_CLASS=fork: forks a work-horse per job from a parent that loaded the engine once.

    The horse inherits the warmed engine copy-on-write; a horse stuck in native code is
    ended by a C-level watchdog (faulthandler), and one that dies is noticed at once by
    its parent, so the job is retried without waiting for heartbeats to expire.
    """


class QrSimpleWorker(QrWorkerMixin, SimpleWorker):
    """The default (QRW_WORKER_CLASS=simple): jobs run in the worker process itself.

    No fork per job: docs/benchmarks.md measures about 3x the single-image throughput
    of the forking worker. The hard backstop still holds: the faulthandler watchdog
    ends the whole worker process when a job overruns inside native code; the pool
    respawns it and the job, its lease no longer renewed, is recovered and retried.
    """


def worker_class(name: str) -> type[Worker] | type[SimpleWorker]:
    return QrWorker if name == "fork" else QrSimpleWorker


def hash_reused(job: Job) -> bool:
    """Whether the job's hash holds another enqueue than the one that ran. Redis away: no
    (RQ's writes stay guarded anyway; the publish that follows rides the outage out)."""
    if not isinstance(job, QrJob):
        return False
    try:
        return not job.holds_hash()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("job_hash_unchecked", job_id=job.id, error=repr(exc))
        return False


def give_retry_budget(job: Job) -> bool:
    """Give a job the configured retries if its producer set none; True if it had none."""
    if job.retries_left is not None:
        return False
    job.retries_left = max(0, context.current().settings.max_attempts - 1)
    job.retry_intervals = [0]
    return True


def failure_code(exc_type: type[BaseException], exc_value: BaseException | None) -> ErrorCode:
    """The error code of a failed run, by the exception's type alone."""
    if isinstance(exc_value, JobRejected | ScanFailed):
        return exc_value.code
    if issubclass(exc_type, JobTimeoutException):
        return ErrorCode.DEADLINE_EXCEEDED
    if issubclass(exc_type, DeserializationError):
        return ErrorCode.INVALID_PAYLOAD
    if issubclass(exc_type, AbandonedJobError):
        return ErrorCode.WORKER_LOST
    return ErrorCode.INTERNAL_ERROR


def failure_message(exc_type: type[BaseException], exc_value: BaseException | None) -> str:
    if isinstance(exc_value, JobRejected | ScanFailed):
        return exc_value.message
    if issubclass(exc_type, JobTimeoutException):
        return "the job ran past its timeout"
    if issubclass(exc_type, AbandonedJobError):
        return "the worker running this job died"
    return f"{exc_type.__name__}: {exc_value}" if str(exc_value) else exc_type.__name__


def record_failure(job: Job, exc_type: type, exc_value: BaseException, tb: Any) -> bool:
    """RQ exception handler: it alone sees the exception object, so the failure is
    classified here and kept on the job for handle_job_failure (or, for a job whose
    worker vanished, published here: RQ's maintenance calls no worker method for it)."""
    code = failure_code(exc_type, exc_value)
    if isinstance(job, QrJob):
        job.failure_code = code
        job.failure_message = failure_message(exc_type, exc_value)
    if issubclass(exc_type, AbandonedJobError):
        # RQ reads the budget after this handler returns, so one given here is used.
        give_retry_budget(job)
        if job.retries_left and job.retries_left > 0:
            log.warning(
                "job_requeued_after_worker_loss", job_id=job.id, retries_left=job.retries_left
            )
        else:
            publish_failure(job, code, failure_message(exc_type, exc_value))
    return True  # let RQ's own handlers run too


def failure_of(job: Job, exc_string: str, *, stopped: bool) -> tuple[ErrorCode, str]:
    """The code and message of a failed run. Without an exception (a work-horse killed,
    a job stuck in RQ's intermediate list, a stop request) the worker lost the job."""
    if isinstance(job, QrJob) and job.failure_code is not None:
        return job.failure_code, job.failure_message
    if stopped:
        return ErrorCode.WORKER_LOST, "the job was stopped on request"
    lines = exc_string.strip().splitlines()
    return ErrorCode.WORKER_LOST, lines[-1] if lines else "the job's run ended without a result"


def publish_failure(job: Job, code: ErrorCode, message: str) -> None:
    """The failure result of a job that ends without one of its own (a timeout, a crash, a
    lost worker), from whichever process ends it."""
    ctx = context.current()
    try:
        payload = job.args[0] if job.args else None
    except DeserializationError:
        payload = None
    echo = payloads.echo(payload)
    result = JobResult.failed(
        ctx, job.id, code, message, request_id=echo.request_id, meta=echo.meta
    )
    outcome.finish(ctx, result, echo, delivery_of(job), event="job_failed", queue=job.origin)


def failed_result(job: Job) -> tuple[ErrorCode, str] | None:
    """The error code and message of a result `jobs.scan` returned with `ok: false`."""
    document = job._result  # what perform() returned: the published document
    if not isinstance(document, dict) or document.get("ok") is not False:
        return None
    error = document.get("error") or {}
    try:
        code = ErrorCode(error.get("code"))
    except ValueError:
        code = ErrorCode.INTERNAL_ERROR
    return code, str(error.get("message") or "")
