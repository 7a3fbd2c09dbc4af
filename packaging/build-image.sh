#!/usr/bin/env bash
# Build the roomengine-exporter container image offline: the release binary,
# the shared libraries it links (ldd) and the dynamic loader, staged under
# target/image-stage, then the Containerfile (FROM scratch) on that stage.
#
#   packaging/build-image.sh [--tag TAG] [--oci-archive FILE]
#                            [--builder buildah|podman|docker] [--stage-only]
#
# --tag          image name (default roomengine-exporter:dev)
# --oci-archive  also write the image to FILE as an OCI archive (buildah, podman)
# --builder      the tool that builds from the Containerfile (default buildah)
# --stage-only   stop after staging; print the build command for any builder
#
# buildah runs as root with no container runtime (the Containerfile has no RUN
# step, so chroot isolation is enough) and no registry (FROM scratch). Its
# storage is the host's default; set CONTAINERS_STORAGE_CONF to use another.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAG=roomengine-exporter:dev
OCI_ARCHIVE=""
BUILDER=buildah
STAGE_ONLY=0

die() { echo "build-image: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) [ $# -ge 2 ] || die "--tag needs a value"; TAG=$2; shift 2 ;;
        --oci-archive) [ $# -ge 2 ] || die "--oci-archive needs a file"; OCI_ARCHIVE=$2; shift 2 ;;
        --builder) [ $# -ge 2 ] || die "--builder needs a value"; BUILDER=$2; shift 2 ;;
        --stage-only) STAGE_ONLY=1; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case "$BUILDER" in buildah|podman|docker) ;; *) die "--builder must be buildah, podman or docker" ;; esac
[ -z "$OCI_ARCHIVE" ] || [ "$BUILDER" != docker ] || die "--oci-archive needs buildah or podman"
if [ "$STAGE_ONLY" -eq 0 ]; then
    command -v "$BUILDER" >/dev/null 2>&1 || die "'$BUILDER' not found (Debian: apt-get install $BUILDER)"
fi
command -v ldd >/dev/null 2>&1 || die "ldd not found"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
STAGE=$TARGET_DIR/image-stage
BIN=$TARGET_DIR/release/roomengine-exporter

# Incremental: reuses target/release when it is up to date.
echo "build-image: cargo build --release" >&2
(cd "$ROOT" && cargo build --release --locked --quiet)

rm -rf "$STAGE"
mkdir -p "$STAGE/root/usr/bin" "$STAGE/root/etc/roomengine-exporter" "$STAGE/root/var/lib" \
         "$STAGE/root/tmp" "$STAGE/state"
chmod 1777 "$STAGE/root/tmp"
install -m 0755 "$BIN" "$STAGE/root/usr/bin/roomengine-exporter"
if command -v strip >/dev/null 2>&1; then
    strip --strip-unneeded "$STAGE/root/usr/bin/roomengine-exporter"
fi

# The exact libraries the binary links, at the paths the loader looks them up
# (the loader itself at the binary's PT_INTERP path, e.g. /lib64/ld-linux-x86-64.so.2).
# glibc >= 2.34 has NSS files/dns built in, so nothing is dlopen()ed beyond these.
ldd_out=$(ldd "$BIN" 2>&1) || ldd_out=""
if grep -q 'not found' <<<"$ldd_out"; then
    die "the binary links a library that is not installed: $(grep 'not found' <<<"$ldd_out")"
fi
libs=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out")
for lib in $libs; do
    mkdir -p "$STAGE/root$(dirname "$lib")"
    cp -L "$lib" "$STAGE/root$lib"    # -L: the file itself, under the name the binary asks for
done

# The exporter verifies the API's certificates against webpki-roots compiled
# into the binary (reqwest's rustls-tls feature), so no CA bundle is needed.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:roomengine-exporter:/var/lib/roomengine-exporter:/sbin/nologin\n' \
    >"$STAGE/root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$STAGE/root/etc/group"
printf 'hosts: files dns\n' >"$STAGE/root/etc/nsswitch.conf"
install -m 0644 "$ROOT/packaging/exporter.yaml" "$STAGE/root/etc/roomengine-exporter/exporter.yaml"

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n1)
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED")

if [ "$STAGE_ONLY" -eq 1 ]; then
    echo "build-image: staged in $STAGE; build with:" >&2
    echo "docker build -f $ROOT/Containerfile -t $TAG ${build_args[*]} $STAGE"
    exit 0
fi

echo "build-image: $BUILDER build $TAG" >&2
case "$BUILDER" in
    buildah) buildah bud --isolation chroot --layers=false --quiet -f "$ROOT/Containerfile" \
                 -t "$TAG" "${build_args[@]}" "$STAGE" >/dev/null ;;
    podman)  podman build --quiet -f "$ROOT/Containerfile" -t "$TAG" "${build_args[@]}" "$STAGE" >/dev/null ;;
    docker)  docker build --quiet -f "$ROOT/Containerfile" -t "$TAG" "${build_args[@]}" "$STAGE" >/dev/null ;;
esac

if [ -n "$OCI_ARCHIVE" ]; then
    rm -f "$OCI_ARCHIVE"
    case "$BUILDER" in
        buildah) buildah push --quiet "$TAG" "oci-archive:$OCI_ARCHIVE:$TAG" ;;
        podman)  podman save --quiet --format oci-archive -o "$OCI_ARCHIVE" "$TAG" ;;
    esac
    echo "build-image: wrote $OCI_ARCHIVE ($(du -h "$OCI_ARCHIVE" | cut -f1))" >&2
fi
echo "build-image: built $TAG" >&2
