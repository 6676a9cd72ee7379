{
  description = "mkinstaller and autoinstall-terminal: offline installers for NixOS fleets";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        # Every binary of the workspace. The tests need root, loop devices and a Nix store of
        # their own, so they run in tests/run, not in the sandbox.
        workspace = pkgs.rustPlatform.buildRustPackage {
          pname = "nixos-autoinstall";
          version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;
          src = nixpkgs.lib.cleanSource self;
          cargoLock.lockFile = ./Cargo.lock;
          doCheck = false;
        };
        default = workspace;
      });
    };
}
