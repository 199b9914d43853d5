# Local Kubernetes for tests and development (see k8s/dev/README.md).
# Included by the main Makefile: `include k8s/dev/cluster.mk`.
# Uses only PYTHON from outside.
PYTHON ?= python3

RF_K8S_DEV := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
# do not become the default goal when included before the main targets
RF_K8S_SAVED_GOAL := $(.DEFAULT_GOAL)

.PHONY: k8s-tools node-deps node-tools images cluster-up cluster-down cluster-status

## Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
## kwok and helm into the tool cache (no-op when cached; ~11 min cold on 2 cores).
k8s-tools:
	bash $(RF_K8S_DEV)/build-tools.sh

## Debian packages of the real node and the image builds (containerd, runc, CNI
## plugins, buildah, debootstrap, iptables; versions pinned in versions.env).
node-deps:
	bash $(RF_K8S_DEV)/build-node.sh --system-deps

## Build kubelet, kube-proxy, CoreDNS and pause into their own cache (no-op when cached).
node-tools: node-deps
	bash $(RF_K8S_DEV)/build-node.sh

## Build the API, CPU worker and Redis images with buildah; writes build/images.env.
images: node-deps
	bash $(RF_K8S_DEV)/build-images.sh

## Start the local cluster in the background; prints `export KUBECONFIG=...`.
## REAL_NODE=1 adds a real node (kubelet + containerd, needs root) with the
## images of build/images.env imported.
cluster-up: k8s-tools $(if $(REAL_NODE),node-tools images)
	$(PYTHON) $(RF_K8S_DEV)/localkube.py up $(if $(REAL_NODE),--real-node)

## Stop the local cluster and remove its files.
cluster-down:
	$(PYTHON) $(RF_K8S_DEV)/localkube.py down

## Show the local cluster's processes and nodes.
cluster-status:
	$(PYTHON) $(RF_K8S_DEV)/localkube.py status

.DEFAULT_GOAL := $(RF_K8S_SAVED_GOAL)
