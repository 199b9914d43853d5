"""Celery workers: the Celery app, the job runner and the workloads."""
