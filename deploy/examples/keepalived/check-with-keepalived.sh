#!/bin/sh
# Checks every keepalived.conf example here with real keepalived (`keepalived -t`, config test
# mode), exiting non-zero if keepalived rejects any of them.
#
# keepalived -t also checks the host: that interfaces exist, that scripts exist and that their
# users exist. So each check runs in a throw-away network and mount namespace (unshare, root
# only) holding interfaces eth0 and eth1 (veth), stub programs for the scripts the examples name
# (on overlays of /usr/sbin, /usr/local/sbin and /usr/bin) and a `haproxy` user. Nothing outside
# the namespaces changes; they vanish when the check ends.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
command -v keepalived >/dev/null || { echo "keepalived is not installed" >&2; exit 2; }

exec unshare --net --mount --fork sh -eu -c '
here=$1
mount --make-rprivate /
scratch=$(mktemp -d)
mount -t tmpfs tmpfs "$scratch"
for dir in /usr/sbin /usr/local/sbin /usr/bin; do
    key=$(echo "$dir" | tr / _)
    mkdir -p "$scratch/$key/upper" "$scratch/$key/work"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$scratch/$key/upper,workdir=$scratch/$key/work" "$dir"
done
for program in /usr/sbin/squid /usr/local/sbin/proxy-notify /usr/local/sbin/hav-notify \
    /usr/local/sbin/web-notify /usr/local/sbin/lb-notify /usr/bin/curl /usr/bin/killall; do
    [ -x "$program" ] || { printf "#!/bin/sh\nexit 0\n" > "$program"; chmod 755 "$program"; }
done
cp /etc/passwd /etc/group "$scratch/"
grep -q "^haproxy:" /etc/passwd || echo "haproxy:x:64999:64999::/nonexistent:/usr/sbin/nologin" >> "$scratch/passwd"
grep -q "^haproxy:" /etc/group || echo "haproxy:x:64999:" >> "$scratch/group"
mount --bind "$scratch/passwd" /etc/passwd
mount --bind "$scratch/group" /etc/group
for link in eth0 eth1; do
    ip link add "$link" type veth peer name "${link}-peer"
    ip link set "${link}-peer" up
    ip link set "$link" up
done
status=0
for file in "$here"/*/node-*.conf; do
    if (cd "$(dirname "$file")" && keepalived -t -f "$(basename "$file")") > "$scratch/log" 2>&1; then
        echo "ok      $file"
    else
        echo "FAILED  $file (keepalived -t exit $?)"
        sed "s/^/        /" "$scratch/log"
        status=1
    fi
done
exit $status
' check "$here"
