# An example fleet: two hosts installed from one stick by their machines' serials.
#
#   nix build .#installer            # the USB stick image (./result); dd it to a stick
#   nix build .#installer-iso        # the same fleet as a hybrid ISO (BMC virtual media, CD)
#   nix run .#mkinstaller -- --flake . -o /dev/sdX          # or straight onto a stick
#   nix run .#mkinstaller -- --flake . --format cache --sign-key /etc/fleet/fleet.sec -o site/
#   nix build .#online-stick         # a small stick that installs from that site
#
# Copy this directory to start your own fleet: change the serials, the hosts and the key.
{
  description = "An example NixOS fleet installed by serial with nixos-autoinstall";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
    disko = {
      url = "github:nix-community/disko";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    # nixos-autoinstall itself. In your fleet's repository, the URL you fetch it from, e.g.
    # "git+https://git.example.org/infra/nixos-autoinstall"; here, the checkout this example
    # is part of.
    autoinstall = {
      url = "path:../..";
      inputs.nixpkgs.follows = "nixpkgs";
      inputs.disko.follows = "disko";
    };
  };

  # Everything is in outputs.nix, so that nixos-autoinstall's own checks build this fleet
  # with their inputs (checks.example-fleet).
  outputs = inputs: import ./outputs.nix inputs;
}
