#!/usr/bin/env bash
# The widget tests need an X server (napari draws with OpenGL; Qt's offscreen
# platform has no GL here).  pytest-xvfb starts Xvfb when the binary exists;
# this installs it and the xcb libraries PyQt5's platform plugin needs, on
# Debian/Ubuntu when run as root.  Elsewhere it only says what is missing.
set -u
need=()
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb xauth)
for lib in libxcb-icccm.so.4 libxcb-keysyms.so.1 libxcb-xinerama.so.0 libxcb-image.so.0 \
           libxcb-render-util.so.0 libxcb-randr.so.0 libxcb-shape.so.0 libxcb-xfixes.so.0 \
           libxcb-cursor.so.0 libxkbcommon-x11.so.0 libGL.so.1 libEGL.so.1 libfontconfig.so.1 \
           libdbus-1.so.3; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || need+=("$lib")
done
[ ${#need[@]} -eq 0 ] && exit 0
pkgs="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0 \
libxcb-randr0 libxcb-shape0 libxcb-xfixes0 libxcb-cursor0 libxkbcommon-x11-0 libgl1 libegl1 \
libfontconfig1 libdbus-1-3"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the X server and libraries for the widget tests: ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs) >/dev/null \
    || { echo "apt-get failed; the widget tests will fail without: $pkgs" >&2; exit 1; }
else
  echo "missing for the widget tests: ${need[*]} (Debian packages: $pkgs)" >&2
fi
exit 0
