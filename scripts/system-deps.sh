#!/bin/sh
# Debian packages the lab and the tests use. Installed only when missing and
# only when we are root; otherwise we say what to install and carry on (the
# lab falls back to asyncssh's server without OpenSSH).
set -eu
# sshd for the lab, mosquitto for MQTT heartbeats and jobs, GStreamer's RTSP server for camera tests.
PKGS="openssh-server openssh-client mosquitto \
  gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-tools gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "note: not root; please install:$missing (tests needing them will be skipped)" >&2
fi
