#!/usr/bin/env bash
# Installs Debian's nginx for the multi-replica tests (tests/it/replicas.rs starts its own
# nginx as a round-robin load balancer in front of several gateways, then stops it). Quick
# no-op when nginx is present. The package's own service is not started.
set -euo pipefail
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
    echo "nginx-env.sh: $(/usr/sbin/nginx -v 2>&1) present" >&2
    exit 0
fi
if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "nginx-env.sh: install nginx as root (apt-get install nginx-light or nginx), or set QM_NGINX" >&2
    exit 1
fi
apt-get update -qq >&2
# policy-rc.d: the package must not start its own server (ports, and nothing to stop it).
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >&2
rm -f /usr/sbin/policy-rc.d
echo "nginx-env.sh: $(/usr/sbin/nginx -v 2>&1) installed" >&2
