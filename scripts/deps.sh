#!/usr/bin/env bash
# Installs the system packages the build needs (UCX, ZeroMQ, pkg-config) when
# pkg-config cannot already find them. Safe to run repeatedly; non-interactive.
set -euo pipefail
if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists ucx libzmq 2>/dev/null; then
  exit 0
fi
echo "deps: installing pkg-config libucx-dev libzmq3-dev" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends pkg-config libucx-dev libzmq3-dev gcc libc6-dev >/dev/null
pkg-config --exists ucx libzmq
