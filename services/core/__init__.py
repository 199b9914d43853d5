"""Shared core: settings, job model and state machine, job kinds, queues, job store."""
