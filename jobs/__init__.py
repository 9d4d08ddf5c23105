"""The job functions a producer may name. Only these run; see worker.queue.names."""

from jobs.scanning import scan

__all__ = ["scan"]
