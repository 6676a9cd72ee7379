# lib.mkInstaller: the fleet's stick (or ISO, cache site, netboot files) as a derivation.
#
#   packages.x86_64-linux.installer = autoinstall.lib.mkInstaller {
#     nixosConfigurations = self.nixosConfigurations;   # hosts: those with autoinstall.serials
#     defaults = self.autoinstall.defaults;             # hosts.toml's [defaults] (optional)
#     format = "usb";                                   # usb | iso | cache | netboot
#   };
#
# One evaluation of the fleet (images/nixos/fleet.nix, the function `mkinstaller --flake`
# runs too, so both make the same stick) and one derivation that depends on every host's
# toplevel. mkinstaller runs in the build sandbox on a private Nix database loaded with the
# closures. `nix build .#installer` leaves the image at ./result (usb, iso) or the directory
# (cache, netboot). Signing and sealing need keys outside the store: sign sites and seal
# secrets (`secrets = "passphrase"`) with `nix run .#mkinstaller -- --flake . --sign-key …
# --secrets-passphrase-file …` instead.
{ self, nixpkgs }:
{ nixosConfigurations ? { }
, defaults ? { }
, format ? "usb"
  # Boot media for the online installer of the cache site at this URL, instead of a fleet.
, online ? null
, system ? "x86_64-linux"
  # autoinstall.installer options for the installer environment (nixosModules.installer):
  # trustedKeys, caCertificates, url, extraArgs, consoles, tools.
, installer ? { }
  # More mkinstaller arguments, e.g. [ "--kernel-args" "console=ttyS1,115200" "--size" "16G" ].
, extraArgs ? [ ]
, name ? "nixos-fleet-${format}"
}:
let
  inherit (nixpkgs) lib;
  pkgs = nixpkgs.legacyPackages.${system};
  fleet = import ./fleet.nix { inherit nixosConfigurations defaults; };
  hostsToml = pkgs.writeText "hosts.toml" fleet.toml;
  toplevels = map (n: nixosConfigurations.${n}.config.system.build.toplevel) fleet.hosts;
  # The installer environment for one platform.
  envFor = platform: (lib.nixosSystem {
    system = platform;
    modules = [
      self.nixosModules.installer
      { autoinstall.installer = { package = self.packages.${platform}.autoinstall-terminal; } // installer; }
    ];
  }).config.system.build.autoinstallEnv;
  # One per platform the hosts are built for (a mixed fleet's stick boots x86-64 and aarch64
  # machines; building the aarch64 one on an x86-64 builder needs an aarch64 builder or
  # boot.binfmt.emulatedSystems), else `system`'s.
  hostPlatforms = lib.unique (map
    (n: nixosConfigurations.${n}.config.nixpkgs.hostPlatform.system or system)
    fleet.hosts);
  envs = map envFor (if online == null && hostPlatforms != [ ] then hostPlatforms else [ system ]);
  env = builtins.head envs;
  source = if online == null then [ "--mass" "${hostsToml}" ] else [ "--online" online ];
in
assert lib.assertOneOf "lib.mkInstaller format" format [ "usb" "iso" "cache" "netboot" ];
pkgs.runCommand name
{
  nativeBuildInputs = [ self.packages.${system}.mkinstaller-unwrapped pkgs.nix ];
  passthru = { inherit hostsToml env envs; };
}
  ''
    export NIX_STATE_DIR=$TMPDIR/state NIX_REMOTE=local HOME=$TMPDIR
    # Every time in the image is SOURCE_DATE_EPOCH, else 0: unset, as on a command line, so
    # that `mkinstaller --flake` makes the same bytes. (Version the fleet with `generation`.)
    unset SOURCE_DATE_EPOCH
    ${lib.optionalString (online == null)
      "nix-store --load-db < ${pkgs.closureInfo { rootPaths = toplevels; }}/registration"}
    mkinstaller ${lib.escapeShellArgs source} --format ${format} -o $out \
      ${lib.escapeShellArgs (lib.concatMap (e: [ "--installer" "${e}" ]) envs)} \
      --cache-dir $TMPDIR/cache --quiet ${lib.escapeShellArgs extraArgs}
  ''
