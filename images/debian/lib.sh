# shellcheck shell=bash
# Shared by images/debian/build and tests/fixtures/demo-fleet/build: fetching Debian packages
# into a cache and extracting them, and resolving kernel module dependencies.
#
# Packages come from the machine's own apt sources with `apt-get download` (no chroot, no
# debootstrap, nothing installed on the host) and are unpacked with `dpkg -x` once per .deb:
# a rebuild with nothing changed only looks at the cache.

# Where downloads and unpacked trees live. Root uses /var/cache; anyone else their XDG cache.
if [[ -n "${NIXOS_AUTOINSTALL_CACHE:-}" ]]; then
  DEB_CACHE="$NIXOS_AUTOINSTALL_CACHE"
elif ((EUID == 0)); then
  DEB_CACHE=/var/cache/nixos-autoinstall
else
  DEB_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/nixos-autoinstall"
fi

die() { echo "${0##*/}: $*" >&2; exit 1; }
note() { echo "${0##*/}: $*" >&2; }

# A fresh machine has no package lists: fetch them once (nothing else needs apt-get update).
ensure_apt_lists() {
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null && return
  ((EUID == 0)) || die "apt has no package lists: run apt-get update as root"
  note "apt has no package lists: apt-get update"
  apt-get update -qq || die "apt-get update failed"
}

# Installs the host tools given as Debian package names if they are missing (idempotent).
ensure_host_packages() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  ((EUID == 0)) || die "missing host packages: ${missing[*]} (run as root, or install them)"
  note "installing host tools: ${missing[*]}"
  ensure_apt_lists
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null || die "apt-get install ${missing[*]} failed"
}

# Nix run by root builds as the members of group nixbld (its compiled-in default). Debian's
# nix-bin alone creates none (nix-setup-systemd would, with a daemon we do not use), and a
# build then fails with "the group 'nixbld' ... does not exist": make the group and four
# build users, as Nix's multi-user installer does. Idempotent.
ensure_nix_build_users() {
  ((EUID == 0)) || return 0
  getent group nixbld >/dev/null || groupadd --system nixbld || die "groupadd nixbld failed"
  local i
  for i in 1 2 3 4; do
    getent passwd "nixbld$i" >/dev/null && continue
    useradd --system --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin \
      --gid nixbld --groups nixbld --comment "Nix build user $i" "nixbld$i" ||
      die "useradd nixbld$i failed"
  done
}

# apt_cached CMD...: runs an apt query once per state of apt's package lists and of dpkg's
# database; later runs read the stored answer. Each apt call parses all package lists (this
# machine keeps no pkgcache.bin), about a second each: the bulk of an unchanged rebuild.
apt_cached() {
  local key file
  key=$(
    {
      stat -c '%n %s %Y' /var/lib/apt/lists/* /etc/apt/sources.list* /etc/apt/sources.list.d/* \
        /etc/apt/preferences* /var/lib/dpkg/status 2>/dev/null
      printf '%s\n' "$@"
    } | sha256sum | cut -c1-32
  )
  file="$DEB_CACHE/apt-answers/$key"
  if [[ ! -f "$file" ]]; then
    mkdir -p "$DEB_CACHE/apt-answers"
    "$@" >"$file.tmp" 2>&1 || { cat "$file.tmp" >&2; rm -f "$file.tmp"; return 1; }
    mv -f "$file.tmp" "$file"
  fi
  cat "$file"
}

# apt-get download --print-uris, in an empty directory: apt leaves out the files it finds
# in the current one.
print_uris() { (cd "$DEB_CACHE/empty" && apt-get download --print-uris "$@"); }

# The versioned kernel package behind the linux-image-amd64 meta-package (or $KERNEL_PACKAGE).
kernel_package() {
  if [[ -n "${KERNEL_PACKAGE:-}" ]]; then
    echo "$KERNEL_PACKAGE"
    return
  fi
  local pkg
  ensure_apt_lists
  # (|| true: an apt failure shows as no answer, reported below rather than by set -e.)
  pkg=$(apt_cached apt-cache depends linux-image-amd64 |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ && !p { print $2; p = 1 }') || true
  [[ -n "$pkg" ]] || die "cannot resolve linux-image-amd64 (run apt-get update?)"
  echo "$pkg"
}

# fetch_debs PKG...: makes sure each package's candidate .deb is in the cache and unpacked.
# Sets DEB_FILE[pkg] (the .deb), DEB_TREE[pkg] (its unpacked tree), DEB_VERSION[pkg] and
# DEB_SHA256[pkg]. Only what is missing from the cache is downloaded; apt-get checks hashes.
declare -gA DEB_FILE=() DEB_TREE=() DEB_VERSION=() DEB_SHA256=()
# shellcheck disable=SC2034 # the DEB_* maps are read by the scripts that source this file
fetch_debs() {
  local uris line name file hash pkg tree tmp
  local -a want=()
  mkdir -p "$DEB_CACHE/debs" "$DEB_CACHE/trees" "$DEB_CACHE/empty"
  # One apt call tells the file names and hashes of the candidates without downloading.
  uris=$(apt_cached print_uris "$@") || die "apt-get download --print-uris $* failed"
  while read -r line; do
    # 'URI' FILE SIZE SHA256:HEX
    [[ "$line" == \'* ]] || continue
    read -r _ file _ hash <<<"$line"
    name=${file%%_*}
    DEB_FILE[$name]="$DEB_CACHE/debs/$file"
    DEB_SHA256[$name]=${hash#SHA256:}
    [[ -f "$DEB_CACHE/debs/$file" ]] || want+=("$name")
  done <<<"$uris"
  for pkg in "$@"; do
    [[ -n "${DEB_FILE[$pkg]:-}" ]] || die "apt knows no package $pkg (apt-get update?)"
  done
  if ((${#want[@]})); then
    note "downloading ${want[*]}"
    # Sandbox::User=root: the cache belongs to root, so apt's _apt user could not write it.
    (cd "$DEB_CACHE/debs" && apt-get -q -o APT::Sandbox::User=root download "${want[@]}" \
      >/dev/null) || die "apt-get download ${want[*]} failed"
  fi
  for pkg in "$@"; do
    file=${DEB_FILE[$pkg]}
    tree="$DEB_CACHE/trees/$(basename "$file" .deb)"
    if [[ ! -f "$tree/.unpacked" ]]; then
      # Check the cached file against the archive's hash before trusting it forever.
      echo "${DEB_SHA256[$pkg]}  $file" | sha256sum -c --quiet - >/dev/null 2>&1 ||
        die "$file does not match the archive's SHA256 (remove it and retry)"
      # Unpack beside and rename, so an interrupted run never leaves a half tree behind.
      tmp=$(mktemp -d "$DEB_CACHE/trees/.tmp.XXXXXX")
      dpkg-deb -x "$file" "$tmp" || { rm -rf "$tmp"; die "dpkg-deb -x $file failed"; }
      : >"$tmp/.unpacked"
      rm -rf "$tree"
      mv "$tmp" "$tree"
    fi
    DEB_TREE[$pkg]=$tree
    DEB_VERSION[$pkg]=$(dpkg-deb -f "$file" Version)
  done
}

# kernel_release TREE: the kernel release (uname -r) of an unpacked linux-image package.
kernel_release() {
  local d
  for d in "$1"/lib/modules/*/; do
    [[ -d "$d/kernel" ]] && { basename "$d"; return; }
  done
  die "no lib/modules/*/kernel in $1"
}

# kernel_depmod TREE KVER: runs depmod over the whole unpacked module tree once (Debian's
# package ships no modules.dep: its postinst makes it), so modprobe can resolve dependencies.
kernel_depmod() {
  [[ -f "$1/lib/modules/$2/modules.dep" ]] && return
  depmod -b "$1" "$2" || die "depmod -b $1 $2 failed"
}

# module_closure TREE KVER MODULE...: prints, in load order and once each, the .ko paths
# (relative to lib/modules/KVER) of the modules and of everything they depend on, soft
# dependencies included. Fails naming any module this kernel does not have.
module_closure() {
  local tree=$1 kver=$2 out
  shift 2
  # --show-depends prints "insmod /abs/path.ko" per module (deps first) and "builtin NAME"
  # for built-in ones; a missing module makes modprobe fail with its name.
  tree=$(realpath "$tree")
  out=$(modprobe -d "$tree" -S "$kver" --show-depends -a "$@" 2>&1) ||
    die "kernel $kver: $out"
  # index/substr, not sub(): versions hold "+" and ".", which a regex would misread.
  awk -v prefix="$tree/lib/modules/$kver/" '
    $1 == "insmod" {
      p = $2
      if (index(p, prefix) == 1) p = substr(p, length(prefix) + 1)
      if (!seen[p]++) print p
    }
  ' <<<"$out"
}
