"""RQ compatibility: the worker's drop-ins for RQ's own per-job bookkeeping (`lean_rq`), dequeue
(`lean_dequeue`) and job timeout (`death_penalty`). They keep every RQ key and registry exactly as
RQ writes them, so RQ's tools see scriptpool's jobs as RQ's own."""
