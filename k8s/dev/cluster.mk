# Local Kubernetes for tests and development (see k8s/dev/README.md).
# Included by the main Makefile: `include k8s/dev/cluster.mk`.
# Uses only PYTHON from outside.
PYTHON ?= python3

RF_K8S_DEV := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
# do not become the default goal when included before the main targets
RF_K8S_SAVED_GOAL := $(.DEFAULT_GOAL)

.PHONY: k8s-tools cluster-up cluster-down cluster-status

## Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
## kwok and helm into the tool cache (no-op when cached; ~11 min cold on 2 cores).
k8s-tools:
	bash $(RF_K8S_DEV)/build-tools.sh

## Start the local cluster in the background; prints `export KUBECONFIG=...`.
cluster-up: k8s-tools
	$(PYTHON) $(RF_K8S_DEV)/localkube.py up

## Stop the local cluster and remove its files.
cluster-down:
	$(PYTHON) $(RF_K8S_DEV)/localkube.py down

## Show the local cluster's processes and nodes.
cluster-status:
	$(PYTHON) $(RF_K8S_DEV)/localkube.py status

.DEFAULT_GOAL := $(RF_K8S_SAVED_GOAL)
