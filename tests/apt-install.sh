# Sourced by the ensure-*.sh scripts: `apt_install NAME PACKAGE...` installs
# Debian packages with apt-get (update first), as root or through sudo, or
# exits 1 saying why NAME cannot be installed.
apt_install() {
    local name=$1
    shift
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "ensure-$name: $name missing and apt-get is not available; install it and put it on PATH" >&2
        exit 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "ensure-$name: not root and sudo is missing; cannot install $*" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    echo "ensure-$name: installing Debian package(s) $*" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    # --no-install-recommends: recommended extras are not needed; the lock
    # timeout waits for another apt-get instead of failing.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=120 "$@" >/dev/null
}
