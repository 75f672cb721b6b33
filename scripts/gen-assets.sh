#!/usr/bin/env bash
# Generates what the Debian packages ship next to the binaries: the man pages, gzipped (each
# program's page rendered from its own command line by clap_mangen, and the section-5 pages of
# the config files in deploy/man/), and havctl's shell completions.
#
#   scripts/gen-assets.sh BIN_DIR OUT_DIR    # e.g. target/release target/release/assets
#
# OUT_DIR/man/: hav-agent.8 hav-coordinator.8 havctl.1 havctl-<command>.1 hav-agent.toml.5
# hav-fleet.toml.5 havctl.toml.5 (each .gz); OUT_DIR/completions/: havctl (bash), _havctl (zsh),
# havctl.fish. OUT_DIR is made anew.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BIN_DIR OUT_DIR" >&2; exit 2; }
bin=$1
out=$2
root=$(cd "$(dirname "$0")/.." && pwd)

rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
"$bin/hav-agent" --write-man "$out/man"
"$bin/hav-coordinator" --write-man "$out/man"
"$bin/havctl" man --dir "$out/man"
cp "$root"/deploy/man/*.5 "$out/man/"
gzip -9n "$out"/man/*
"$bin/havctl" completions bash >"$out/completions/havctl"
"$bin/havctl" completions zsh >"$out/completions/_havctl"
"$bin/havctl" completions fish >"$out/completions/havctl.fish"
