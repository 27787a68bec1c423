"""Job kinds: the names shared by those who enqueue work and the handlers that do it."""

EXPORT_TO_WORLDSHARE = "worldshare.export"
POLL_WORLDSHARE = "worldshare.poll"
DISPATCH_POLLS = "worldshare.dispatch_polls"
NOTIFY_ALMA = "alma.notify"
PURGE_FINISHED_JOBS = "jobs.purge_finished"
