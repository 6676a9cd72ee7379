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

# --- the architecture packages are for ---------------------------------------------------------
# set_deb_arch amd64|arm64: the Debian architecture that fetch_debs fetches for (amd64 until
# called) and the names that follow from it: DEB_TRIPLET (the multiarch library directory),
# DEB_LOADER (the dynamic loader's file name), DEB_LOADER_LINK (where PT_INTERP looks for it,
# relative to a merged-/usr root, and what that link points to), EFI_ARCH (the suffix of EFI
# file names: BOOTX64.EFI, BOOTAA64.EFI), RUST_TARGET.
# shellcheck disable=SC2034 # read by the scripts that source this file
set_deb_arch() {
  case "$1" in
    amd64)
      DEB_TRIPLET=x86_64-linux-gnu DEB_LOADER=ld-linux-x86-64.so.2 EFI_ARCH=x64
      DEB_LOADER_LINK="usr/lib64/ld-linux-x86-64.so.2 ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
      RUST_TARGET=x86_64-unknown-linux-gnu
      ;;
    arm64)
      DEB_TRIPLET=aarch64-linux-gnu DEB_LOADER=ld-linux-aarch64.so.1 EFI_ARCH=aa64
      DEB_LOADER_LINK="usr/lib/ld-linux-aarch64.so.1 aarch64-linux-gnu/ld-linux-aarch64.so.1"
      RUST_TARGET=aarch64-unknown-linux-gnu
      ;;
    *) die "unknown architecture $1 (amd64 or arm64)" ;;
  esac
  DEB_ARCH=$1
  storage_modules
}

# deb_names PKG...: the package names as apt is asked for them: PKG:ARCH when the packages are
# for another architecture than this machine's (which apt must then know: ensure_deb_arch).
deb_names() {
  if [[ "$DEB_ARCH" == "$(dpkg --print-architecture)" ]]; then
    printf '%s\n' "$@"
  else
    printf '%s\n' "${@/%/:$DEB_ARCH}"
  fi
}

# ensure_deb_arch: apt knows DEB_ARCH's packages (dpkg --add-architecture, then apt-get update
# once). Idempotent; nothing is installed for that architecture.
ensure_deb_arch() {
  [[ "$DEB_ARCH" != "$(dpkg --print-architecture)" ]] || return 0
  dpkg --print-foreign-architectures | grep -qx "$DEB_ARCH" && return 0
  ((EUID == 0)) || die "apt does not know $DEB_ARCH packages: run as root, or dpkg --add-architecture $DEB_ARCH && apt-get update"
  note "adding the $DEB_ARCH architecture to apt (dpkg --add-architecture $DEB_ARCH; apt-get update)"
  dpkg --add-architecture "$DEB_ARCH" || die "dpkg --add-architecture $DEB_ARCH failed"
  apt-get update -qq || die "apt-get update failed"
}

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
    # (A file of this process's own first: builds run side by side.)
    "$@" >"$file.$$" 2>&1 || { cat "$file.$$" >&2; rm -f "$file.$$"; return 1; }
    mv -f "$file.$$" "$file"
  fi
  cat "$file"
}

# apt-get download --print-uris, in an empty directory: apt leaves out the files it finds
# in the current one.
print_uris() { (cd "$DEB_CACHE/empty" && apt-get download --print-uris "$@"); }

# The versioned kernel package behind the linux-image-DEB_ARCH meta-package (or $KERNEL_PACKAGE).
kernel_package() {
  if [[ -n "${KERNEL_PACKAGE:-}" ]]; then
    echo "$KERNEL_PACKAGE"
    return
  fi
  local pkg
  ensure_apt_lists
  # (|| true: an apt failure shows as no answer, reported below rather than by set -e.)
  ensure_deb_arch
  pkg=$(apt_cached apt-cache depends "$(deb_names "linux-image-$DEB_ARCH")" |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ && !p { sub(/:.*/, "", $2); print $2; p = 1 }') || true
  [[ -n "$pkg" ]] || die "cannot resolve linux-image-$DEB_ARCH (run apt-get update?)"
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
  ensure_deb_arch
  local -a names
  mapfile -t names < <(deb_names "$@")
  uris=$(apt_cached print_uris "${names[@]}") || die "apt-get download --print-uris ${names[*]} failed"
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
    mapfile -t want < <(deb_names "${want[@]}")
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

# --- the storage stack: LUKS, LVM, md RAID -------------------------------------------------
# Carried by both the installer environment (images/debian/build), which lays out LUKS, LVM and
# RAID, and the demo hosts' stage 1 (tests/fixtures/demo-fleet/build), which unlocks and
# assembles them again: one list, so that what the installer makes is what the installed
# system's stage 1 can open.
# shellcheck disable=SC2034 # read by the scripts that source this file
STORAGE_TOOL_PACKAGES=(cryptsetup-bin lvm2 mdadm dmsetup systemd)
# The libraries those tools link against (the NEEDED walk of stage_libraries fails naming a
# library none of the packages given to it provides). libsystemd0 and what it pulls come
# with lvm, which links it for journal logging and never needs systemd running.
# shellcheck disable=SC2034
STORAGE_LIB_PACKAGES=(libgcc-s1 libcryptsetup12 libdevmapper1.02.1 libdevmapper-event1.02.1
  libpopt0 libargon2-1 libjson-c5 libssl3 libaio1 libedit2 libbsd0 libmd0 libtinfo6 libsystemd0
  libcap2 libgcrypt20 libgpg-error0 liblz4-1 liblzma5 libzstd1 libudev1 libselinux1
  libpcre2-8-0 libblkid1 libuuid1 libc6
  libsystemd-shared libacl1 libcrypt1 libip4tc2 libkmod2 libmount1 libpam0g libseccomp2
  libtss2-esys-3.0.2-0 libtss2-mu0 libtss2-rc0 libtss2-sys1 libtss2-tctildr0
  libtss2-tcti-device0 libaudit1 libcap-ng0)
# PACKAGE PATH-IN-PACKAGE PATH-IN-ROOT, as stage_tools takes them.
# shellcheck disable=SC2034
STORAGE_TOOLS="
cryptsetup-bin sbin/cryptsetup usr/sbin/cryptsetup
lvm2           sbin/lvm        usr/sbin/lvm
mdadm          sbin/mdadm      usr/sbin/mdadm
dmsetup        sbin/dmsetup    usr/sbin/dmsetup
systemd        usr/bin/systemd-cryptenroll  usr/bin/systemd-cryptenroll
systemd        lib/systemd/systemd-cryptsetup usr/sbin/systemd-cryptsetup
"
# Files no NEEDED entry names: glibc loads libgcc_s.so.1 with dlopen when a thread ends
# (pthread_exit unwinds), and cryptsetup's argon2 ends its worker threads that way: without
# it, opening an argon2id keyslot on a machine with several CPUs aborts. systemd (its
# cryptenroll, its cryptsetup and libcryptsetup's token plugin) loads the TPM2 stack with
# dlopen, and tss2's loader the device TCTI: the TPM2 enrolment at install and the TPM2
# unlock in stage 1. Their own NEEDED libraries are found by stage_libraries' walk. The token
# plugin goes where libcryptsetup looks for it, /lib/TRIPLET/cryptsetup (the
# installer's /lib is a link to usr/lib; the demo stage 1's is a directory), and without it
# systemd-cryptsetup does not try the TPM2 at all.
# shellcheck disable=SC2034
STORAGE_DATA="
libgcc-s1 lib/@TRIPLET@/libgcc_s.so.1 usr/lib/@TRIPLET@/libgcc_s.so.1
systemd usr/lib/@TRIPLET@/cryptsetup/libcryptsetup-token-systemd-tpm2.so lib/@TRIPLET@/cryptsetup/libcryptsetup-token-systemd-tpm2.so
libtss2-esys-3.0.2-0 usr/lib/@TRIPLET@/libtss2-esys.so.0 usr/lib/@TRIPLET@/libtss2-esys.so.0
libtss2-rc0 usr/lib/@TRIPLET@/libtss2-rc.so.0 usr/lib/@TRIPLET@/libtss2-rc.so.0
libtss2-mu0 usr/lib/@TRIPLET@/libtss2-mu.so.0 usr/lib/@TRIPLET@/libtss2-mu.so.0
libtss2-tctildr0 usr/lib/@TRIPLET@/libtss2-tctildr.so.0 usr/lib/@TRIPLET@/libtss2-tctildr.so.0
libtss2-tcti-device0 usr/lib/@TRIPLET@/libtss2-tcti-device.so.0 usr/lib/@TRIPLET@/libtss2-tcti-device.so.0
"
# Kernel modules (module_closure adds what they depend on): device-mapper with the targets LVM
# uses (linear and striped are in dm_mod; thin pools, snapshots, mirrors, RAID LVs), dm-crypt
# with the ciphers LUKS2 uses by default (aes-xts-plain64; aes_generic and sha256 are built
# in, aesni_intel (aes_ce_blk on arm64) is the fast path on real CPUs and fails to load under
# QEMU's TCG, which is expected), AF_ALG for cryptsetup's keyslot encryption, and md with its
# RAID levels. Set by set_deb_arch.
# shellcheck disable=SC2034
storage_modules() {
  local aes=aesni_intel
  [[ "$DEB_ARCH" != arm64 ]] || aes=aes_ce_blk
  STORAGE_MODULES=(
    dm_mod dm_crypt dm_thin_pool dm_persistent_data dm_bufio dm_snapshot dm_mirror dm_raid
    xts essiv ecb cbc "$aes" algif_skcipher af_alg
    md_mod raid0 raid1 raid10 raid456
  )
}

# storage_aliases: the ALIASES lines (PATH-IN-ROOT TARGET) for LVM's command names, read from
# the lvm2 package itself (every symlink to lvm in its sbin: pvcreate, vgchange, lvs...), so
# that the list follows Debian's. Needs lvm2 fetched.
storage_aliases() {
  local l
  [[ -n "${DEB_TREE[lvm2]:-}" ]] || die "storage_aliases: lvm2 was not fetched"
  for l in "${DEB_TREE[lvm2]}"/sbin/*; do
    if [[ -L "$l" && "$(readlink "$l")" == lvm ]]; then echo "usr/sbin/${l##*/} lvm"; fi
  done
}

# stage_storage_config ROOT: the configuration that lets LVM and mdadm run without udev
# (images/debian/etc: lvm.conf, mdadm.conf), copied into ROOT/etc.
stage_storage_config() {
  local conf
  conf=$(dirname "${BASH_SOURCE[0]}")/etc
  install -D -m 0644 "$conf/lvm/lvm.conf" "$1/etc/lvm/lvm.conf"
  install -D -m 0644 "$conf/mdadm/mdadm.conf" "$1/etc/mdadm/mdadm.conf"
}

# storage_config_files: the files stage_storage_config copies (for input hashes).
storage_config_files() {
  local conf
  conf=$(dirname "${BASH_SOURCE[0]}")/etc
  echo "$conf/lvm/lvm.conf" "$conf/mdadm/mdadm.conf"
}

# --- staging tools and their libraries -------------------------------------------------------

# stage_tools ROOT TOOLS ALIASES: copies files out of unpacked packages (fetch_debs) into the
# tree ROOT. TOOLS holds lines "PACKAGE PATH-IN-PACKAGE PATH-IN-ROOT" (symlinks followed);
# ALIASES lines "PATH-IN-ROOT TARGET" (symlinks, TARGET written as it is). Blank lines are
# skipped; @TRIPLET@ in TOOLS stands for DEB_TRIPLET. Fails naming the package that lacks a file.
stage_tools() {
  local root=$1 pkg src dst link target
  while read -r pkg src dst; do
    [[ -n "$pkg" ]] || continue
    [[ -n "${DEB_TREE[$pkg]:-}" ]] || die "stage_tools: package $pkg was not fetched"
    [[ -f "${DEB_TREE[$pkg]}/$src" ]] || die "$pkg has no $src"
    mkdir -p "$(dirname "$root/$dst")"
    cp -L "${DEB_TREE[$pkg]}/$src" "$root/$dst"
  done <<<"${2//@TRIPLET@/$DEB_TRIPLET}"
  while read -r link target; do
    [[ -n "$link" ]] || continue
    mkdir -p "$(dirname "$root/$link")"
    ln -sfn "$target" "$root/$link"
  done <<<"$3"
}

# stage_libraries ROOT PACKAGE...: walks the NEEDED entries of every ELF file under ROOT/usr/bin
# and ROOT/usr/sbin, recursively, and copies each library (under its soname) from the unpacked
# PACKAGEs into ROOT/usr/lib/DEB_TRIPLET until nothing new is needed; when any file is
# dynamically linked, also the loader and the link PT_INTERP names (DEB_LOADER_LINK: for
# x86-64 ROOT/usr/lib64, so ROOT/lib64 must lead there). No host ldd: what goes in comes from the same Debian packages as the tools.
# Fails naming a library that none of the PACKAGEs provides, and the script to fix.
stage_libraries() {
  local root=$1 p d f so src dynamic=0
  shift
  local -A lib_src=()
  for p in "$@"; do
    [[ -n "${DEB_TREE[$p]:-}" ]] || die "stage_libraries: package $p was not fetched"
    for d in "lib/$DEB_TRIPLET" "usr/lib/$DEB_TRIPLET" "usr/lib/$DEB_TRIPLET/systemd"; do
      [[ -d "${DEB_TREE[$p]}/$d" ]] || continue
      for f in "${DEB_TREE[$p]}/$d"/*.so*; do
        [[ -e "$f" ]] || continue
        : "${lib_src[${f##*/}]:=$f}"
      done
    done
  done
  local libdir="$root/usr/lib/$DEB_TRIPLET" link=${DEB_LOADER_LINK% *}
  mkdir -p "$libdir" "$root/$(dirname "$link")"
  local queue=()
  while IFS= read -r -d '' f; do
    [[ "$(head -c 4 "$f" | tr -d '\0')" == $'\x7fELF' ]] && queue+=("$f")
  done < <(find "$root/usr/bin" "$root/usr/sbin" "$libdir" -type f -print0 2>/dev/null)
  while ((${#queue[@]})); do
    f=${queue[0]}
    queue=("${queue[@]:1}")
    if readelf -lW "$f" | grep 'Requesting program interpreter' >/dev/null; then dynamic=1; fi
    for so in $(readelf -dW "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      [[ -e "$libdir/$so" ]] && continue
      src=${lib_src[$so]:-}
      [[ -n "$src" ]] || die "${f#"$root"} needs $so, which none of the library packages" \
        "provides: add its package (try: dpkg -S $so) to the list in $0 (or to" \
        "STORAGE_LIB_PACKAGES in images/debian/lib.sh for the storage tools)"
      cp -L "$src" "$libdir/$so"
      queue+=("$libdir/$so")
    done
  done
  if ((dynamic)); then
    [[ -n "${lib_src[$DEB_LOADER]:-}" ]] || die "no $DEB_LOADER (is libc6 among the packages?)"
    [[ -e "$libdir/$DEB_LOADER" ]] || cp -L "${lib_src[$DEB_LOADER]}" "$libdir/$DEB_LOADER"
    ln -sfn "${DEB_LOADER_LINK#* }" "$root/$link"
  fi
}

# --- GRUB for BIOS, as a host's boot loader --------------------------------------------------
# What a host that boots by BIOS installs from its own closure (the demo fleet's demo-bios,
# tests/fixtures/demo-fleet): Debian's grub-install, GRUB's i386-pc modules and the libraries
# grub-install links.
# shellcheck disable=SC2034
GRUB_BIOS_PACKAGES=(grub2-common grub-pc-bin libc6 libdevmapper1.02.1 libefiboot1 libefivar1
  liblzma5 libselinux1 libudev1 libpcre2-8-0)

# stage_grub_bios ROOT: ROOT/usr/sbin/grub-install, its libraries and the loader (run it as
# ROOT/usr/lib64/ld-linux-x86-64.so.2 --library-path ROOT/usr/lib/x86_64-linux-gnu …: no
# /lib64 on a NixOS root), and the modules in ROOT/usr/lib/grub/i386-pc. GRUB_BIOS_PACKAGES
# must be fetched (fetch_debs).
stage_grub_bios() {
  local root=$1
  [[ -n "${DEB_TREE[grub-pc-bin]:-}" ]] || die "stage_grub_bios: fetch_debs \${GRUB_BIOS_PACKAGES[@]} first"
  stage_tools "$root" "grub2-common usr/sbin/grub-install usr/sbin/grub-install" ""
  mkdir -p "$root/usr/lib/grub"
  cp -r "${DEB_TREE[grub-pc-bin]}/usr/lib/grub/i386-pc" "$root/usr/lib/grub/"
  stage_libraries "$root" "${GRUB_BIOS_PACKAGES[@]}"
}

# --- dropbear, an SSH server -----------------------------------------------------------------
# In the installer environment (remote access) and in the demo host demo-ssh (the running
# system that mkinstaller --ssh installs over): the server, its key maker, their libraries.
# shellcheck disable=SC2034
DROPBEAR_PACKAGES=(dropbear-bin libc6 zlib1g libcrypt1 libtomcrypt1 libtommath1 libgmp10)
# shellcheck disable=SC2034
DROPBEAR_TOOLS="
dropbear-bin usr/sbin/dropbear usr/sbin/dropbear
dropbear-bin usr/bin/dropbearkey usr/bin/dropbearkey
"

# stage_dropbear ROOT: stages them into ROOT (DROPBEAR_PACKAGES fetched first, with fetch_debs).
stage_dropbear() {
  stage_tools "$1" "$DROPBEAR_TOOLS" ""
  stage_libraries "$1" "${DROPBEAR_PACKAGES[@]}"
}

# --- sbsign, a Secure Boot signer --------------------------------------------------------------
# What the demo host demo-sb's boot loader step signs its boot files with (as lanzaboote does):
# Debian's sbsign and its libraries. Run it as ROOT/usr/lib64/ld-linux-x86-64.so.2
# --library-path ROOT/usr/lib/x86_64-linux-gnu ROOT/usr/bin/sbsign.
# shellcheck disable=SC2034
SBSIGN_PACKAGES=(sbsigntool libc6 libssl3 libuuid1)

# stage_sbsign ROOT: stages it into ROOT (SBSIGN_PACKAGES fetched first, with fetch_debs).
stage_sbsign() {
  stage_tools "$1" "sbsigntool usr/bin/sbsign usr/bin/sbsign" ""
  stage_libraries "$1" "${SBSIGN_PACKAGES[@]}"
}

set_deb_arch amd64
