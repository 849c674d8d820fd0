#!/usr/bin/env bash
# The widget tests need an X server (napari draws with OpenGL; Qt's offscreen
# platform has no GL here).  pytest-xvfb starts Xvfb when the binary exists;
# this installs it and the libraries Qt 6's xcb platform plugin (PyQt6's
# plugins/platforms/libqxcb.so, checked with ldd) needs, on Debian/Ubuntu when
# run as root.  Elsewhere it only says what is missing.
set -u
# library:Debian package, for everything libqxcb.so and the Qt6 libraries
# (Gui, OpenGL, Widgets, DBus, XcbQpa) load from the system.
libs="libxcb.so.1:libxcb1 libX11-xcb.so.1:libx11-xcb1 libxcb-cursor.so.0:libxcb-cursor0
libxcb-icccm.so.4:libxcb-icccm4 libxcb-image.so.0:libxcb-image0 libxcb-keysyms.so.1:libxcb-keysyms1
libxcb-randr.so.0:libxcb-randr0 libxcb-render-util.so.0:libxcb-render-util0
libxcb-render.so.0:libxcb-render0 libxcb-shape.so.0:libxcb-shape0 libxcb-shm.so.0:libxcb-shm0
libxcb-sync.so.1:libxcb-sync1 libxcb-util.so.1:libxcb-util1 libxcb-xfixes.so.0:libxcb-xfixes0
libxcb-xkb.so.1:libxcb-xkb1 libxkbcommon.so.0:libxkbcommon0 libxkbcommon-x11.so.0:libxkbcommon-x11-0
libGL.so.1:libgl1 libEGL.so.1:libegl1 libfontconfig.so.1:libfontconfig1
libfreetype.so.6:libfreetype6 libglib-2.0.so.0:libglib2.0-0 libdbus-1.so.3:libdbus-1-3"
need=()
pkgs=()
if ! command -v Xvfb >/dev/null 2>&1; then
  need+=(Xvfb)
  pkgs+=(xvfb xauth)
fi
for pair in $libs; do
  lib=${pair%%:*}
  if ! ldconfig -p 2>/dev/null | grep -q "$lib"; then
    need+=("$lib")
    pkgs+=("${pair#*:}")
  fi
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the X server and libraries for the widget tests: ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}") \
    >/dev/null || { echo "apt-get failed; the widget tests need: ${pkgs[*]}" >&2; exit 1; }
else
  echo "missing for the widget tests: ${need[*]} (Debian packages: ${pkgs[*]})" >&2
fi
exit 0
