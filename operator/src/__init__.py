"""renderfarm.operator: scales worker Deployments on the true depth of their Celery queues.

The decision is pure (policy.py); Redis (queue_reader.py) and Kubernetes (kube.py)
sit around it; kopf (main.py) watches the WorkerPool resources. See README.md.
"""
