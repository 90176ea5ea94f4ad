#!/bin/sh
# Install keepalived-arbiter on one node: a venv in /opt/keepalived-arbiter, the commands in /usr/local/bin, the
# systemd unit and keepalived's drop-in, /etc/keepalived-arbiter with a config and a heartbeat key. Safe to run
# again (upgrade): an existing config or key is never overwritten. It never enables or starts the service.
#
# usage: deploy/install.sh [--wheel FILE] [--python PYTHON] [--deps-from PYTHON] [--no-systemctl]
#   --wheel FILE        install this wheel instead of building one from the source tree this script is in
#   --python PYTHON     interpreter for the venv (default python3; 3.11 or newer)
#   --deps-from PYTHON  do not download dependencies: make PYTHON's installed packages importable in the new
#                       venv (a .pth line) and install only this project. For tests and offline staging, not for
#                       a node: the venv then depends on PYTHON's environment staying as it is.
#   --no-systemctl      skip `systemctl daemon-reload`
# DESTDIR=/some/root prefixes every path written (staging, tests); node checks then run offline and
# systemctl is not called. The venv's scripts name their interpreter by its full DESTDIR path, so a staged venv
# runs where it was staged, not after moving the tree.
set -eu

VENV=/opt/keepalived-arbiter
BIN=/usr/local/bin
CONF_DIR=/etc/keepalived-arbiter
CONF=$CONF_DIR/arbiter.toml
KEY=$CONF_DIR/heartbeat.key
UNIT_DIR=/etc/systemd/system
DESTDIR=${DESTDIR:-}
SRC=$(cd "$(dirname "$0")/.." && pwd)

wheel=""
python=python3
deps_from=""
systemctl=yes

die() {
    echo "install.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
        --wheel) [ $# -ge 2 ] || die "--wheel needs a file"; wheel=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python=$2; shift 2 ;;
        --deps-from) [ $# -ge 2 ] || die "--deps-from needs an interpreter"; deps_from=$2; shift 2 ;;
        --no-systemctl) systemctl=no; shift ;;
        -h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (or set DESTDIR= to stage into a directory)"
fi
case $DESTDIR in /* | "") ;; *) die "DESTDIR must be an absolute path (got $DESTDIR)" ;; esac
[ -f "$SRC/deploy/arbiter.toml.example" ] || die "cannot find the source tree (expected $SRC/deploy)"
if [ -n "$wheel" ]; then
    [ -f "$wheel" ] || die "no such wheel: $wheel"
    wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the venv -------------------------------------------------------------------------------------------------
umask 022
venv=$DESTDIR$VENV
if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv" || die "$python -m venv failed (Debian: apt-get install python3-venv)"
fi
"$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$venv: Python 3.11 or newer needed"
pip() {
    "$venv/bin/python" -m pip --disable-pip-version-check "$@"
}

if [ -n "$deps_from" ]; then
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$deps_from" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' \
        > "$site/keepalived_arbiter_deps.pth" || die "--deps-from $deps_from: not a Python interpreter"
fi

if [ -z "$wheel" ]; then
    # Built from a copy: setuptools' build/ directory in the source tree keeps files deleted since the last
    # build and would put them in the wheel.
    echo "building a wheel from $SRC"
    mkdir "$work/src"
    cp -R "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/arbiter" "$SRC/fencers" "$SRC/hooks" "$work/src/"
    find "$work/src" -name __pycache__ -type d -prune -exec rm -rf {} +
    pip wheel -q --no-deps -w "$work/wheel" "$work/src"
    wheel=$(ls "$work"/wheel/keepalived_arbiter-*.whl)
fi

echo "installing $(basename "$wheel") into $venv"
if [ -n "$deps_from" ]; then
    pip install -q --no-deps --force-reinstall "$wheel"
else
    pip install -q "$wheel"
    # Same version number as the installed one still means new code (an upgrade from a newer checkout).
    pip install -q --no-deps --force-reinstall "$wheel"
fi
"$venv/bin/keepalived-arbiter" --help > /dev/null || die "the installed keepalived-arbiter does not run"

mkdir -p "$DESTDIR$BIN"
ln -sfn "$VENV/bin/keepalived-arbiter" "$DESTDIR/usr/local/bin/keepalived-arbiter"
ln -sfn "$VENV/bin/keepalived-arbiter-notify" "$DESTDIR/usr/local/bin/keepalived-arbiter-notify"

# --- systemd ----------------------------------------------------------------------------------------------------
mkdir -p "$DESTDIR$UNIT_DIR/keepalived.service.d"
cp "$SRC/deploy/systemd/keepalived-arbiter.service" "$DESTDIR$UNIT_DIR/keepalived-arbiter.service"
cp "$SRC/deploy/systemd/keepalived.service.d/arbiter.conf" "$DESTDIR$UNIT_DIR/keepalived.service.d/arbiter.conf"
chmod 0644 "$DESTDIR$UNIT_DIR/keepalived-arbiter.service" "$DESTDIR$UNIT_DIR/keepalived.service.d/arbiter.conf"

# --- config and secrets ------------------------------------------------------------------------------------------
umask 077
mkdir -p "$DESTDIR$CONF_DIR"
chmod 0700 "$DESTDIR$CONF_DIR"
if [ -e "$DESTDIR$CONF" ]; then
    echo "keeping $CONF"
else
    cp "$SRC/deploy/arbiter.toml.example" "$DESTDIR$CONF.tmp"
    chmod 0600 "$DESTDIR$CONF.tmp"
    mv "$DESTDIR$CONF.tmp" "$DESTDIR$CONF"
    echo "wrote $CONF from the example: edit it"
fi
if [ -e "$DESTDIR$KEY" ]; then
    echo "keeping $KEY"
else
    "$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))' > "$DESTDIR$KEY.tmp"
    chmod 0600 "$DESTDIR$KEY.tmp"
    mv "$DESTDIR$KEY.tmp" "$DESTDIR$KEY"
    echo "wrote a new heartbeat key $KEY"
fi

# --- check the config ------------------------------------------------------------------------------------------
# Staged (DESTDIR): the node checks would look at this machine's /etc and interfaces, not the staged node's.
offline=""
[ -n "$DESTDIR" ] && offline=--offline
status=0
echo "keepalived-arbiter check-config $offline -c $CONF"
if ! "$venv/bin/keepalived-arbiter" check-config $offline -c "$DESTDIR$CONF"; then
    if cmp -s "$SRC/deploy/arbiter.toml.example" "$DESTDIR$CONF"; then
        echo "warning: $CONF is still the example; the service will refuse to start until it is edited" >&2
    else
        echo "error: $CONF is not valid (above); fix it before enabling the service" >&2
        status=1
    fi
fi

if [ "$systemctl" = yes ] && [ -z "$DESTDIR" ]; then
    systemctl daemon-reload
fi

cat <<EOF

Installed. Next steps on this node:
  1. Edit $CONF (node name, peers, instances, Redis, fencing); then
       keepalived-arbiter check-config
  2. The heartbeat key must be the same on every node: copy $KEY from the first node to the others
     (mode 0600), replacing the one generated here.
  3. Add the track_file, its weight-0 reference and the notify hook to keepalived.conf
     (see $SRC/deploy/keepalived.conf.example).
  4. Check every fence device without touching power:
       keepalived-arbiter fence NODE check
  5. Start it (keepalived's drop-in orders keepalived after the agent):
       systemctl enable --now keepalived-arbiter
       systemctl restart keepalived
EOF
exit $status
