#!/usr/bin/env bash
# Run a command with the network switched off: a new, empty network namespace with only the loopback
# interface (127.0.0.1 works: Jupyter kernels, the browser test's local web server).
#
#     tools/netoff.sh COMMAND [ARGS...]
#
# The notebooks and tests must never need the network; running them here proves it.
#
# How, in order of preference:
#   * root:      `unshare -n` (a network namespace; the command keeps running as root);
#   * non-root:  `unshare -rn` (a user namespace in which we may create the network namespace), then a
#                nested user namespace that maps the caller's own uid/gid back, so files are written and
#                `id` reports as the real user (util-linux >= 2.38; with an older unshare the command
#                runs as the namespace's root, which owns nothing outside it);
#   * neither:   FAIL (exit 3) with the reason, unless LSUTILS_ALLOW_NETWORK=1 is set, in which case the
#                command runs with the network ON and a note says so.
#
# Unprivileged user namespaces are switched off on some systems: `sysctl user.max_user_namespaces`
# (0 = off), `/proc/sys/kernel/unprivileged_userns_clone` (Debian/Ubuntu kernels; 0 = off) and
# `/proc/sys/kernel/apparmor_restrict_unprivileged_userns` (Ubuntu >= 23.10; 1 = restricted).
#
# Inside, LSUTILS_NETWORK=off is set (the test headers print it).
set -euo pipefail

if [ $# -eq 0 ]; then
    echo "usage: tools/netoff.sh COMMAND [ARGS...]   (runs COMMAND without network access)" >&2
    exit 2
fi

# Inside the new namespace: bring loopback up, then run the command (argument 1 says how).
#   plain:   exec the command as is
#   remap:   exec it in a nested user namespace that maps the caller's uid/gid back
# shellcheck disable=SC2016
INNER='set -e
how=$1; uid=$2; gid=$3; shift 3
ip link set lo up
export LSUTILS_NETWORK=off
if [ "$how" = remap ]; then
    exec unshare --user --map-user="$uid" --map-group="$gid" -- "$@"
fi
exec "$@"'

# the first line of what a failing command says (for the messages; never fails itself)
first_error() {
    local said
    said=$("$@" 2>&1 | head -n 1 || true)
    echo "${said:-it failed and said nothing}"
}

why_not=()
if ! command -v unshare >/dev/null 2>&1; then
    why_not+=("unshare is not installed (Debian/Ubuntu package util-linux)")
elif ! command -v ip >/dev/null 2>&1; then
    why_not+=("ip is not installed (Debian/Ubuntu package iproute2), needed to bring up loopback")
elif [ "$(id -u)" = 0 ]; then
    if unshare --net true 2>/dev/null; then
        exec unshare --net -- bash -c "$INNER" netoff plain 0 0 "$@"
    fi
    why_not+=("unshare --net failed as root (a container without CAP_SYS_ADMIN?): $(first_error unshare --net true)")
else
    uid=$(id -u); gid=$(id -g)
    if unshare --map-root-user --net true 2>/dev/null; then
        if unshare --map-root-user --net -- unshare --user --map-user="$uid" --map-group="$gid" -- true 2>/dev/null; then
            exec unshare --map-root-user --net -- bash -c "$INNER" netoff remap "$uid" "$gid" "$@"
        fi
        echo "(note: this unshare cannot map uid $uid back (util-linux < 2.38); the command runs as root of a" \
             "user namespace, network off)" >&2
        exec unshare --map-root-user --net -- bash -c "$INNER" netoff plain 0 0 "$@"
    fi
    why_not+=("unprivileged user namespaces are not allowed: $(first_error unshare --map-root-user --net true)")
    why_not+=("user.max_user_namespaces=$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo '?')")
    for knob in /proc/sys/kernel/unprivileged_userns_clone /proc/sys/kernel/apparmor_restrict_unprivileged_userns; do
        [ -r "$knob" ] && why_not+=("${knob#/proc/sys/}=$(cat "$knob")")
    done
fi

if [ "${LSUTILS_ALLOW_NETWORK:-0}" = 1 ]; then
    reasons=$(printf '%s; ' "${why_not[@]}")
    echo "(note: cannot switch the network off here: ${reasons%; }. LSUTILS_ALLOW_NETWORK=1 is set, so the" \
         "command runs WITH the network on and does not prove that it needs none)" >&2
    export LSUTILS_NETWORK=on
    exec "$@"
fi
{
    echo "tools/netoff.sh: cannot switch the network off for: $*"
    for reason in "${why_not[@]}"; do echo "  - $reason"; done
    echo "Fixes (any one):"
    echo "  * run as root, or allow unprivileged user namespaces:"
    echo "      sudo sysctl -w user.max_user_namespaces=15000"
    echo "      sudo sysctl -w kernel.unprivileged_userns_clone=1                  (kernels that have this knob)"
    echo "      sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0      (Ubuntu >= 23.10)"
    echo "  * or accept running WITH the network (the run then does not prove the book works offline):"
    echo "      LSUTILS_ALLOW_NETWORK=1 make test"
} >&2
exit 3
