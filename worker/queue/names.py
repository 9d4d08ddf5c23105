"""Redis names the producer (the Rust side) and ops rely on. Extend, never rename."""

DEFAULT_QUEUE = "qr"
JOB_FUNCTION = "jobs.scan"
ALLOWED_FUNCTIONS = frozenset({JOB_FUNCTION})
RESULTS_STREAM = "qrw:results"


def result_key(job_id: str) -> str:
    return f"qrw:result:{job_id}"
