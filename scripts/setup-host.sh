#!/usr/bin/env bash
# Installs the Debian packages hav's lab and tests use: iproute2 (namespaces, veth, bridges),
# keepalived (the interop peer and the benchmark baseline), tshark (wire checks), BIND 9 (the DNS
# the coordinator publishes to), ping and curl, nftables (`nft`: the agent's accept-mode filter),
# chromium (headless: the dashboard test loads havctl's page in it), etcd (`etcd` and
# `etcdctl`: the clusters the coordinator's etcd store is tested on), and protoc with the
# well-known protos (the etcd-client crate compiles etcd's API with them at build time), and
# groff (the man-page test formats every page), aiosmtpd (the SMTP server the agent's mail
# alerts are tested against), and stress-ng (the CPU load of the 10 ms adverts benchmark).
# Services are not started: tests run their own.
set -euo pipefail
packages=(iproute2 iputils-ping curl procps keepalived tshark bind9 bind9-dnsutils nftables
  chromium etcd-server etcd-client protobuf-compiler libprotobuf-dev groff-base
  strace python3-aiosmtpd stress-ng)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Keep package scripts from starting keepalived, named or etcd on the host.
  policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ $policy_added -eq 0 ] || $sudo rm -f /usr/sbin/policy-rc.d
fi
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
