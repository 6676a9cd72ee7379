# A fleet host's identity, declared beside its configuration (the flake's nixosModules.host):
# which machines install it, and how. `lib.mkInstaller` and `mkinstaller --flake` make one
# [[host]] of hosts.toml from each configuration whose `autoinstall.serials` is not empty
# (images/nixos/fleet.nix); the host's disko layout, if it imports disko, comes along.
#
# Options only: nothing here changes the installed system.
{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.autoinstall = {
    serials = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "PF3ABCDE" "CZC1234XYZ" ];
      description = ''
        SMBIOS system serial numbers (`dmidecode -s system-serial-number`) of the machines
        that install this host from a fleet stick. Compared without case and surrounding
        blanks; a serial vendors leave as a placeholder ("To Be Filled By O.E.M.", "0") is
        refused when the stick is built. A host without serials is not on the stick.
      '';
    };

    profile = mkOption {
      type = types.nullOr (types.either types.str types.path);
      default = null;
      example = "uefi-btrfs";
      description = ''
        The installer profile: a name from installer-profiles/ (a string), or a profile file
        (a path such as `./profiles/lab.toml`, copied into the store). Its disk rules choose
        the disk, and without a disko layout its partitions are the layout. Null: the
        fleet's default profile.
      '';
    };

    disk = mkOption {
      type = types.nullOr (types.strMatching "/dev/.*");
      default = null;
      example = "/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456";
      description = ''
        The disk to install on, when the profile's rules (the largest blank disk, by
        default) must not choose. A path under /dev.
      '';
    };

    luksKeys = mkOption {
      type = types.attrsOf types.path;
      default = { };
      example = { crypted = "/etc/fleet-secrets/host-1.key"; };
      description = ''
        Key files for the layout's LUKS containers, by LUKS name. They travel on the stick
        sealed to the fleet's passphrase, or in the clear, as the fleet's `secrets` says. A
        path inside the flake is copied into the Nix store (readable by every user of that
        machine); give an absolute path as a string to keep it out of the flake.
      '';
    };

    extraFiles = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/etc/fleet-secrets/host-1";
      description = ''
        A directory copied onto the installed root (paths relative to /), e.g.
        `etc/ssh/ssh_host_ed25519_key`. Like luksKeys, it travels sealed or in the clear as
        the fleet's `secrets` says, and a path inside the flake is copied into the store;
        files from the store are installed 0600 (0700 if executable), others keep their mode.
      '';
    };
  };
}
