#!/usr/bin/env bash
# Builds the Debian packages hav-agent, hav-coordinator and havctl with cargo-deb (metadata in
# each crate's Cargo.toml), then checks them: the shipped example configs pass the packaged
# `hav-agent --check`, /etc/hav/agent.toml is a conffile, the units are in place, and every
# package carries its man pages (havctl also its shell completions). Debug symbols go to separate
# -dbgsym .ddebs.
#
#   scripts/build-deb.sh            # release build + packages, in target/debian/
#   scripts/build-deb.sh --no-build # package the binaries already in target/release
#
# Needs cargo-deb (`cargo install cargo-deb --locked`), dpkg-deb and gzip.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "cargo-deb missing: cargo install cargo-deb --locked" >&2; exit 2; }

if [ "${1:-}" != "--no-build" ]; then
    cargo build --release -p hav-agent -p hav-coordinator -p havctl
fi
# Man pages and completions, made from the release binaries (see the packages' assets).
scripts/gen-assets.sh target/release target/release/assets

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# package PACKAGE: builds it, unpacks it into $scratch/PACKAGE, prints the .deb's path.
package() {
    local deb
    deb=$(cargo deb -p "$1" --no-build --dbgsym | grep '\.deb$' | tail -1)
    [ -f "$deb" ] || { echo "cargo deb -p $1 did not report a .deb" >&2; exit 1; }
    dpkg-deb -x "$deb" "$scratch/$1/root"
    dpkg-deb -e "$deb" "$scratch/$1/control"
    echo "$deb"
}

# has PACKAGE PATH...: each path is in the unpacked package.
has() {
    local package=$1
    shift
    for path in "$@"; do
        [ -e "$scratch/$package/root/$path" ] || { echo "$package: $path missing" >&2; exit 1; }
    done
}

agent=$(package hav-agent)
grep -qx /etc/hav/agent.toml "$scratch/hav-agent/control/conffiles" || { echo "/etc/hav/agent.toml is not a conffile" >&2; exit 1; }
has hav-agent usr/lib/systemd/system/hav-agent.service \
    usr/share/man/man8/hav-agent.8.gz usr/share/man/man5/hav-agent.toml.5.gz
examples=$(find "$scratch/hav-agent/root/usr/share/doc/hav-agent/examples" -name '*.toml' | sort)
[ -n "$examples" ] || { echo "no examples packaged" >&2; exit 1; }
for example in $examples; do
    "$scratch/hav-agent/root/usr/sbin/hav-agent" --check "$example" >/dev/null
done
# The conffile as shipped is a template: the agent must refuse to start from it unedited.
if "$scratch/hav-agent/root/usr/sbin/hav-agent" --check "$scratch/hav-agent/root/etc/hav/agent.toml" >/dev/null 2>&1; then
    echo "the shipped /etc/hav/agent.toml should not pass --check before it is edited" >&2
    exit 1
fi

coordinator=$(package hav-coordinator)
has hav-coordinator usr/lib/systemd/system/hav-coordinator.service \
    usr/share/man/man8/hav-coordinator.8.gz usr/share/man/man5/hav-fleet.toml.5.gz

havctl=$(package havctl)
has havctl usr/share/man/man1/havctl.1.gz usr/share/man/man1/havctl-push-config.1.gz \
    usr/share/man/man5/havctl.toml.5.gz usr/share/bash-completion/completions/havctl \
    usr/share/zsh/vendor-completions/_havctl usr/share/fish/vendor_completions.d/havctl.fish

for deb in "$agent" "$coordinator" "$havctl"; do
    echo "package: $deb ($(stat -c %s "$deb") bytes)"
    dpkg-deb -I "$deb" | sed -n '/Package:/,/Depends:/p'
done
echo "examples checked: $(echo "$examples" | wc -l)"
