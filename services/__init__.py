"""renderfarm: a Kubernetes-native render farm for media jobs."""

__version__ = "0.1.0"
