# nixosModules.default: mkinstaller on an admin's NixOS machine (programs.mkinstaller), and
# the host options of nixosModules.host, so that one import serves the admin's machine and the
# fleet's hosts alike. A function of the flake's packages, the package's default where pkgs
# has no mkinstaller (without overlays.default).
{ packages }:
{ config, lib, pkgs, ... }:
let
  cfg = config.programs.mkinstaller;
in
{
  imports = [ ./host.nix ];

  options.programs.mkinstaller = {
    enable = lib.mkEnableOption "mkinstaller, which writes installer sticks, ISOs, netboot files and cache sites for NixOS fleets";
    package = lib.mkPackageOption pkgs "mkinstaller" { } // {
      default = pkgs.mkinstaller or packages.${pkgs.stdenv.hostPlatform.system}.mkinstaller;
    };
  };

  config = lib.mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];
  };
}
