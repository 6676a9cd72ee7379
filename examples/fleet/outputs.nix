# The example fleet's outputs (flake.nix passes its inputs; see there).
{ self, nixpkgs, disko, autoinstall, ... }:
let
  system = "x86_64-linux";

  # A host is an ordinary NixOS configuration that imports nixosModules.host and says which
  # machines install it (autoinstall.serials). Nothing else changes.
  host = modules: nixpkgs.lib.nixosSystem {
    inherit system;
    modules = [ autoinstall.nixosModules.host ./hosts/common.nix ] ++ modules;
  };
in
{
  nixosConfigurations = {
    # The default layout of its own profile (profiles/workstation.toml): ESP + ext4 root.
    web-1 = host [ ./hosts/web-1.nix ];
    # Its disks from disko (disko/db-1.nix): the installer lays out exactly that.
    db-1 = host [ disko.nixosModules.disko ./hosts/db-1.nix ];
  };

  # hosts.toml's [defaults], read by `mkinstaller --flake .` and passed to lib.mkInstaller
  # below, so that the command line and `nix build` make the same stick.
  autoinstall.defaults = import ./defaults.nix;

  packages.${system} = {
    # Every host with serials, on one stick. Not signed (the secret key stays out of the
    # Nix store): whoever holds the stick is trusted, as with any stick.
    installer = autoinstall.lib.mkInstaller {
      inherit (self) nixosConfigurations;
      inherit (self.autoinstall) defaults;
    };
    installer-iso = autoinstall.lib.mkInstaller {
      inherit (self) nixosConfigurations;
      inherit (self.autoinstall) defaults;
      format = "iso";
    };
    # Boot media for the online installer: it finds its host by serial at the fleet's cache
    # site (made and signed with `mkinstaller --flake . --format cache --sign-key …`, served
    # by any static HTTP server) and installs from it. The stick carries no closures, and
    # its installer trusts only the fleet's key: an unsigned or otherwise signed site is
    # refused.
    online-stick = autoinstall.lib.mkInstaller {
      online = "https://fleet.example.org/site";
      installer.trustedKeys = [ (builtins.readFile ./keys/fleet.pub) ];
    };
    # The command line, for sticks written in place and signed sites.
    mkinstaller = autoinstall.packages.${system}.mkinstaller;
  };
}
