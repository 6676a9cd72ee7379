# shellcheck shell=bash
# What the fleet benchmarks share (sourced by tests/bench/image-build and large-fleet).

# fleet_toml FLEET.JSON DIR: the fleet from ../shared/bench/make-fleet-corpus as DIR/hosts.toml
# (every host a bare closure: the corpus's toplevels are not bootable systems), and the
# toplevels, one per line, as DIR/toplevels.
fleet_toml() {
  python3 - "$1" "$2" <<'PY'
import json, sys
fleet, out = json.load(open(sys.argv[1])), sys.argv[2]
s = 'version = 1\n\n[defaults]\non-unknown-serial = "refuse"\nafter-install = "poweroff"\n'
for h in fleet["hosts"]:
    s += f'\n[[host]]\nname = "{h["name"]}"\nserials = ["{h["serial"]}"]\nsystem = "{h["toplevel"]}"\nbootable = false\n'
open(f"{out}/hosts.toml", "w").write(s)
open(f"{out}/toplevels", "w").write("\n".join(h["toplevel"] for h in fleet["hosts"]) + "\n")
PY
}

# stand_in_installer DIR: an installer environment of typical sizes in DIR (systemd-boot, an
# 8 MiB kernel and a 40 MiB initrd of random bytes): the ESP is a few percent of an image
# either way, and nothing boots it.
stand_in_installer() {
  mkdir -p "$1"
  cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$1/"
  [[ -s "$1/kernel" ]] || head -c 8M /dev/urandom >"$1/kernel"
  [[ -s "$1/initrd" ]] || head -c 40M /dev/urandom >"$1/initrd"
  echo "console=ttyS0" >"$1/cmdline"
}
