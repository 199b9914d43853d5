"""python -m renderfarm.operator [--namespace NS] [--liveness http://0.0.0.0:8080/healthz] [--verbose]

Out of the cluster it uses $KUBECONFIG (or ~/.kube/config); in a pod, its ServiceAccount.
"""

from __future__ import annotations

import argparse
import logging
import sys

import kopf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m renderfarm.operator",
                                     description="Scale worker Deployments on the depth of their Celery queues.")
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="namespace whose WorkerPools to serve (repeatable; default RF_OPERATOR_NAMESPACE, "
                             "then the pod's or kubeconfig's namespace)")
    parser.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    from renderfarm.operator.main import serving_namespace  # registers the kopf handlers
    from renderfarm.operator.settings import get_settings

    settings = get_settings()
    kopf.configure(verbose=args.verbose, debug=False)
    logging.getLogger("renderfarm").setLevel("DEBUG" if args.verbose else settings.log_level.upper())
    if not args.verbose:
        # kopf logs every watch event it hands over ("Handler 'pool_event' succeeded"),
        # which is every status write: keep only its warnings.
        logging.getLogger("kopf.objects").setLevel("WARNING")
    namespaces = args.namespace or [serving_namespace(settings)]
    kopf.run(standalone=True, namespaces=namespaces, liveness_endpoint=args.liveness)
    return 0


if __name__ == "__main__":
    sys.exit(main())
