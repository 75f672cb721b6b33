#!/usr/bin/env bash
# Builds the hav-agent Debian package with cargo-deb (metadata in agent/Cargo.toml), then checks
# it: the shipped example configs pass the packaged `hav-agent --check`, /etc/hav/agent.toml is
# a conffile, and the unit is in place. Debug symbols go to a separate -dbgsym .ddeb.
#
#   scripts/build-deb.sh            # release build + package, in target/debian/
#   scripts/build-deb.sh --no-build # package the binary already in target/release
#
# Needs cargo-deb (`cargo install cargo-deb --locked`) and dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "cargo-deb missing: cargo install cargo-deb --locked" >&2; exit 2; }

deb=$(cargo deb -p hav-agent --dbgsym "$@" | grep '\.deb$' | tail -1)
[ -f "$deb" ] || { echo "cargo deb did not report a .deb" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
dpkg-deb -x "$deb" "$scratch/root"
dpkg-deb -e "$deb" "$scratch/control"

grep -qx /etc/hav/agent.toml "$scratch/control/conffiles" || { echo "/etc/hav/agent.toml is not a conffile" >&2; exit 1; }
[ -f "$scratch/root/usr/lib/systemd/system/hav-agent.service" ] || { echo "unit missing" >&2; exit 1; }
examples=$(find "$scratch/root/usr/share/doc/hav-agent/examples" -name '*.toml' | sort)
[ -n "$examples" ] || { echo "no examples packaged" >&2; exit 1; }
for example in $examples; do
    "$scratch/root/usr/sbin/hav-agent" --check "$example" >/dev/null
done
# The conffile as shipped is a template: the agent must refuse to start from it unedited.
if "$scratch/root/usr/sbin/hav-agent" --check "$scratch/root/etc/hav/agent.toml" >/dev/null 2>&1; then
    echo "the shipped /etc/hav/agent.toml should not pass --check before it is edited" >&2
    exit 1
fi

echo "package: $deb ($(stat -c %s "$deb") bytes)"
echo "examples checked: $(echo "$examples" | wc -l)"
dpkg-deb -I "$deb" | sed -n '/Package:/,/Depends:/p'
