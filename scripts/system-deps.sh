#!/bin/sh
# Debian packages the lab and the tests use. Installed only when missing and
# only when we are root; otherwise we say what to install and carry on (the
# lab falls back to asyncssh's server without OpenSSH).
#
#   scripts/system-deps.sh              install what is missing
#   scripts/system-deps.sh --wait-lock  only wait until no other package manager holds dpkg
#
# Fresh cloud machines often run unattended-upgrades at boot: we wait for its
# dpkg lock (saying so) instead of failing with "Could not get lock".
set -eu
# sshd for the lab, mosquitto for MQTT heartbeats and jobs, GStreamer's RTSP server for camera
# tests, jq and curl for the README's tour (tests/test_readme.py runs it), Chromium and its
# WebDriver for the web console's browser tests (tests/console/); lintian, systemd-analyze
# (systemd) and debootstrap for the device package (tests/test_device_package.py).
PKGS="openssh-server openssh-client mosquitto jq curl lintian systemd debootstrap \
  gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-tools gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
  chromium chromium-driver"
# The locks apt and dpkg take (POSIX fcntl locks); tests point this at their own file.
LOCKS="${SYSTEM_DEPS_LOCKS:-/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock}"
LOCK_TIMEOUT="${SYSTEM_DEPS_LOCK_TIMEOUT:-900}"

# Exit 0 when some lock in $LOCKS is held by another process.
lock_busy() {
  python3 - "$@" <<'PY'
import fcntl, os, sys
for path in sys.argv[1:]:
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        continue  # no such lock file, or not ours to open: nobody can be waiting on us
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(0)
    finally:
        os.close(fd)
sys.exit(1)
PY
}

wait_for_lock() {
  start=$(date +%s)
  waited=0
  # shellcheck disable=SC2086 # LOCKS is a list of paths
  while lock_busy $LOCKS; do
    if [ "$waited" -eq 0 ]; then
      echo "waiting for the dpkg lock: another package manager (unattended-upgrades?) is running; up to ${LOCK_TIMEOUT}s" >&2
    fi
    if [ "$waited" -ge "$LOCK_TIMEOUT" ]; then
      echo "error: the dpkg lock is still held after ${LOCK_TIMEOUT}s; wait for the other package manager (see: ps aux | grep -e apt -e dpkg), then run make again" >&2
      exit 1
    fi
    sleep 1
    waited=$(( $(date +%s) - start ))
    [ "$waited" -gt 0 ] || waited=1
  done
  [ "$waited" -eq 0 ] || echo "dpkg lock free after ${waited}s; carrying on" >&2
}

if [ "${1:-}" = "--wait-lock" ]; then
  wait_for_lock
  exit 0
fi

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  wait_for_lock
  # apt waits on its own too, should another package manager start between our check and here.
  apt="apt-get -o DPkg::Lock::Timeout=$LOCK_TIMEOUT"
  $apt update -qq >/dev/null
  # shellcheck disable=SC2086 # one word per package
  $apt install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "note: not root; please install:$missing (tests needing them will be skipped)" >&2
fi
