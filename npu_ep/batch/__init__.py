"""Transcribe an archive: many files on Ray workers (one machine or a cluster), resumable, nothing lost.

Ray is imported only when a batch runs; the base install does not need it (extra: `npu-ep[cluster]`).
"""
from npu_ep.batch.runner import BatchSummary, transcribe_batch

__all__ = ["BatchSummary", "transcribe_batch"]
