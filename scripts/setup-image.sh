#!/usr/bin/env bash
# What building and boot-testing the guest image needs:
# - host tools from the machine's Debian: mksquashfs (squashfs-tools), dpkg-deb, xz, objcopy, ldd, and
#   qemu-system-x86_64 for the boot test (TCG; no KVM needed);
# - the pinned Debian trixie packages of images/inputs.toml, downloaded into .image-inputs/
#   through a private apt configuration (own sources list, lists and cache folders: the host's
#   apt configuration is not changed) and checked against their SHA-256.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dest=$root/.image-inputs

missing=()
command -v mksquashfs >/dev/null || missing+=(squashfs-tools)
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v xz >/dev/null || missing+=(xz-utils)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
command -v objcopy >/dev/null || missing+=(binutils)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-image: installing ${missing[*]}"
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

# name version file sha256, one package a line, from images/inputs.toml.
packages=$(python3 - "$root/images/inputs.toml" <<'PY'
import sys, tomllib
doc = tomllib.load(open(sys.argv[1], "rb"))
for p in doc["package"]:
    print(p["name"], p["version"], p["file"], p["sha256"])
PY
)
suite=$(python3 -c 'import sys,tomllib; print(tomllib.load(open(sys.argv[1],"rb"))["suite"])' "$root/images/inputs.toml")

mkdir -p "$dest"
check() { [ -f "$dest/$1" ] && [ "$(sha256sum "$dest/$1" | cut -d' ' -f1)" = "$2" ]; }
need=0
while read -r name version file sha; do check "$file" "$sha" || need=1; done <<<"$packages"
if [ $need = 1 ]; then
  apt_dir=$dest/apt
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$apt_dir/sources.list"
  apt=(apt-get -q -o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache" -o APT::Sandbox::User=root)
  echo "setup-image: fetching the $suite package lists (private apt configuration in $apt_dir)"
  "${apt[@]}" update >/dev/null
  while read -r name version file sha; do
    check "$file" "$sha" && continue
    echo "setup-image: downloading $name=$version"
    (cd "$dest" && "${apt[@]}" download "$name=$version" >/dev/null)
    if ! check "$file" "$sha"; then
      echo "setup-image: $file does not have the pinned SHA-256 $sha (or $name=$version is no longer in $suite; update images/inputs.toml)" >&2
      exit 1
    fi
  done <<<"$packages"
fi
echo "setup-image: inputs ready in $dest"
