{
  description = "mkinstaller and autoinstall-terminal: offline installers for NixOS fleets";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
  # Only for the checks: a fleet host that declares its disks with disko.
  inputs.disko.url = "github:nix-community/disko";
  inputs.disko.inputs.nixpkgs.follows = "nixpkgs";

  outputs = { self, nixpkgs, disko }:
    let
      # The tools and the installer environment build for both; the checks (VM tests under
      # OVMF) and the development shell are the x86-64 machine's.
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
      forX86 = f: nixpkgs.lib.genAttrs [ "x86_64-linux" ] (system: f system nixpkgs.legacyPackages.${system});
      version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;

      # One binary of the workspace, with its shell completions and man page (both made by
      # the binary itself from its clap definitions: `completions`/`man` are mkinstaller's
      # subcommands, `--completions`/`--man` autoinstall-terminal's flags). The tests need
      # root, loop devices and a Nix store of their own, so they run in tests/run, not in the
      # build sandbox.
      crate = pkgs: name: completions: man: pkgs.rustPlatform.buildRustPackage {
        pname = name;
        inherit version;
        src = nixpkgs.lib.cleanSource self;
        cargoLock.lockFile = ./Cargo.lock;
        cargoBuildFlags = [ "-p" name ];
        doCheck = false;
        nativeBuildInputs = [ pkgs.installShellFiles ];
        postInstall = ''
          for shell in bash zsh fish; do
            $out/bin/${name} ${completions} $shell > ${name}.$shell
          done
          installShellCompletion ${name}.bash ${name}.zsh ${name}.fish
          $out/bin/${name} ${man} > ${name}.1
          installManPage ${name}.1
        '';
        meta.mainProgram = name;
      };

      # The NixOS installer system, with autoinstall-terminal and optional extra arguments.
      installerSystem = system: extraArgs: nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [
          self.nixosModules.installer
          {
            autoinstall.installer.package = self.packages.${system}.autoinstall-terminal;
            autoinstall.installer.extraArgs = extraArgs;
          }
        ];
      };
    in
    {
      # The installer environment (the system the stick boots).
      nixosModules.installer = ./images/nixos/installer.nix;
      # A fleet host's identity: autoinstall.serials, profile, disk, luksKeys, extraFiles.
      nixosModules.host = ./images/nixos/host.nix;
      # programs.mkinstaller.{enable,package} for an admin's machine, and the host options.
      nixosModules.default = import ./images/nixos/tool.nix { inherit (self) packages; };

      # Turn a flake's nixosConfigurations into a fleet: `hostsToml` its hosts.toml (the
      # hosts with autoinstall.serials), `mkInstaller` the stick, ISO, cache site or netboot
      # files as a derivation (images/nixos/mkinstaller.nix says every argument).
      lib = {
        hostsToml = args: (import ./images/nixos/fleet.nix args).toml;
        mkInstaller = import ./images/nixos/mkinstaller.nix { inherit self nixpkgs; };
      };

      # pkgs.mkinstaller and pkgs.autoinstall-terminal.
      overlays.default = final: _prev: {
        inherit (self.packages.${final.stdenv.hostPlatform.system}) mkinstaller autoinstall-terminal;
      };

      formatter = forAllSystems (_system: pkgs: pkgs.nixfmt-rfc-style);

      # What building and the tests need (tests/setup installs the same on Debian).
      devShells = forX86 (_system: pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo rustc clippy rustfmt cargo-fuzz
            nix busybox zstd sqlite dosfstools gptfdisk util-linux systemd mtools xorriso
            btrfs-progs e2fsprogs xfsprogs binutils cpio openssl nginx curl chromium swtpm
            squashfsTools time bc strace qemu OVMF jq openssh cryptsetup lvm2 mdadm
          ];
        };
      });

      packages = forAllSystems (system: pkgs: rec {
        autoinstall-terminal = crate pkgs "autoinstall-terminal" "--completions" "--man";
        mkinstaller-unwrapped = crate pkgs "mkinstaller" "completions" "man";
        # kernel, initrd, cmdline, systemd-bootx64.efi: what mkinstaller takes as --installer.
        installer-env = (installerSystem system [ ]).config.system.build.autoinstallEnv;
        # mkinstaller whose default installer environment is the NixOS one above.
        mkinstaller = pkgs.symlinkJoin {
          name = "mkinstaller-${version}";
          paths = [ mkinstaller-unwrapped ];
          nativeBuildInputs = [ pkgs.makeWrapper ];
          postBuild = ''
            wrapProgram $out/bin/mkinstaller \
              --set-default MKINSTALLER_INSTALLER ${installer-env} \
              --prefix PATH : ${pkgs.lib.makeBinPath [ pkgs.nix ]}
          '';
          meta.mainProgram = "mkinstaller";
        };
        default = mkinstaller;
      });

      apps = forAllSystems (system: pkgs: rec {
        mkinstaller = {
          type = "app";
          program = "${self.packages.${system}.mkinstaller}/bin/mkinstaller";
        };
        default = mkinstaller;
      });

      checks = forX86 (system: pkgs:
        let
          # Two small fleet hosts: real NixOS systems with the default profile's labels.
          host = name: serial: nixpkgs.lib.nixosSystem {
            inherit system;
            modules = [ self.nixosModules.host {
              autoinstall.serials = [ serial ];
              networking.hostName = name;
              boot.loader.systemd-boot.enable = true;
              boot.kernelParams = [ "console=ttyS0" ];
              fileSystems."/" = { device = "/dev/disk/by-partlabel/nixos"; fsType = "ext4"; };
              fileSystems."/boot" = { device = "/dev/disk/by-partlabel/ESP"; fsType = "vfat"; };
              documentation.enable = false;
              system.stateVersion = "25.05";
            }];
          };
          # The fleet's settings: nothing to ask, power off when done.
          defaults = { on-unknown-serial = "refuse"; after-install = "poweroff"; confirm-seconds = 0; };
          # The stick's installer only identifies the machine: the check looks for its serial.
          image = self.lib.mkInstaller {
            inherit system defaults;
            nixosConfigurations = { fleet-1 = host "fleet-1" "NIXTEST-SN-0001"; fleet-2 = host "fleet-2" "NIXTEST-SN-0002"; };
            installer.extraArgs = [ "--identify" ];
          };

          # A fleet host as real fleets declare them: disko lays out LUKS2 (unlocked at boot
          # with a key file in its initrd) with LVM on it, and the host mounts what disko names.
          # lib.mkInstaller writes its disko.devices into hosts.toml as a file (the build
          # sandbox cannot evaluate a flake).
          diskoKey = pkgs.writeText "crypted.key" "0123456789abcdef0123456789abcdef";
          diskoHost = nixpkgs.lib.nixosSystem {
            inherit system;
            modules = [
              disko.nixosModules.disko
              self.nixosModules.host
              {
                autoinstall.serials = [ "NIXTEST-SN-0100" ];
                autoinstall.luksKeys.crypted = diskoKey;
                networking.hostName = "disko-1";
                boot.loader.systemd-boot.enable = true;
                boot.kernelParams = [ "console=ttyS0" ];
                boot.initrd.secrets."/crypted.key" = diskoKey;
                disko.devices = {
                  # A by-id name this machine does not have: the profile's rules choose.
                  disk.main = {
                    type = "disk";
                    device = "/dev/disk/by-id/virtio-not-on-this-machine";
                    content = {
                      type = "gpt";
                      partitions.ESP = {
                        size = "512M";
                        type = "EF00";
                        content = { type = "filesystem"; format = "vfat"; mountpoint = "/boot"; mountOptions = [ "umask=0077" ]; };
                      };
                      partitions.luks = {
                        size = "100%";
                        content = {
                          type = "luks";
                          name = "crypted";
                          settings = { keyFile = "/crypted.key"; allowDiscards = true; };
                          extraFormatArgs = [ "--pbkdf" "pbkdf2" ];
                          content = { type = "lvm_pv"; vg = "pool"; };
                        };
                      };
                    };
                  };
                  lvm_vg.pool = {
                    type = "lvm_vg";
                    lvs.root = {
                      size = "100%FREE";
                      content = { type = "filesystem"; format = "ext4"; mountpoint = "/"; };
                    };
                  };
                };
                # Says on the serial console what it booted from.
                systemd.services.announce = {
                  wantedBy = [ "multi-user.target" ];
                  script = "echo \"DISKO-HOST-UP root=$(${pkgs.util-linux}/bin/findmnt -no SOURCE /)\" > /dev/ttyS0";
                  serviceConfig.Type = "oneshot";
                };
                documentation.enable = false;
                system.stateVersion = "25.05";
              }
            ];
          };
          diskoImage = self.lib.mkInstaller {
            inherit system;
            # Its LUKS key is a test key: it may travel in the clear.
            defaults = defaults // { secrets = "clear"; };
            nixosConfigurations.disko-1 = diskoHost;
          };

          # The example fleet (examples/fleet), built with this flake's inputs.
          example =
            let outputs = import ./examples/fleet/outputs.nix { self = outputs; inherit nixpkgs disko; autoinstall = self; };
            in outputs;
        in
        {
          # Installs the disko host from a mass stick onto a blank disk by its serial, then
          # boots it from that disk alone: LUKS opened with its key, LVM, ext4 root. Needs KVM
          # and nixpkgs; the development machine has neither, so it has not been run there
          # (tests/vm/install-fleet covers the same path with the demo fleet).
          disko-install = pkgs.testers.runNixOSTest {
            name = "autoinstall-disko-install";
            nodes = { };
            testScript = ''
              import os, shutil, subprocess
              tmp = os.environ["TMPDIR"]
              stick = os.path.join(tmp, "stick.img")
              shutil.copy("${diskoImage}", stick)
              os.chmod(stick, 0o644)
              target = os.path.join(tmp, "target.img")
              subprocess.run(["${pkgs.qemu_test}/bin/qemu-img", "create", "-f", "raw", target, "8G"], check=True)
              vars_fd = os.path.join(tmp, "vars.fd")
              shutil.copy("${pkgs.OVMF.fd}/FV/OVMF_VARS.fd", vars_fd)
              os.chmod(vars_fd, 0o644)
              firmware = (
                  "${pkgs.qemu_test}/bin/qemu-kvm -m 2048"
                  " -smbios type=1,serial=NIXTEST-SN-0100"
                  " -drive if=pflash,format=raw,readonly=on,file=${pkgs.OVMF.fd}/FV/OVMF_CODE.fd"
                  f" -drive if=pflash,format=raw,file={vars_fd}"
              )
              installer = create_machine(
                  start_command=firmware + f" -drive file={target},format=raw,if=virtio -drive file={stick},format=raw,if=virtio",
                  name="installer",
              )
              installer.start()
              installer.wait_for_console_text("installed disko-1 on")
              installer.wait_for_shutdown()
              host = create_machine(
                  start_command=firmware + f" -drive file={target},format=raw,if=virtio",
                  name="disko1",
              )
              host.start()
              host.wait_for_console_text("DISKO-HOST-UP root=/dev/mapper/pool-root")
              host.crash()
            '';
          };

          mass-image = pkgs.testers.runNixOSTest {
            name = "autoinstall-mass-image";
            nodes = { };
            testScript = ''
              import os, shutil, subprocess
              for n, serial in enumerate(["NIXTEST-SN-0001", "NIXTEST-SN-0002"]):
                  disk = os.path.join(os.environ["TMPDIR"], f"stick-{n}.img")
                  shutil.copy("${image}", disk)
                  os.chmod(disk, 0o644)
                  vars_fd = os.path.join(os.environ["TMPDIR"], f"vars-{n}.fd")
                  shutil.copy("${pkgs.OVMF.fd}/FV/OVMF_VARS.fd", vars_fd)
                  os.chmod(vars_fd, 0o644)
                  machine = create_machine(
                      start_command=(
                          "${pkgs.qemu_test}/bin/qemu-kvm -m 1024"
                          f" -smbios type=1,serial={serial}"
                          " -drive if=pflash,format=raw,readonly=on,file=${pkgs.OVMF.fd}/FV/OVMF_CODE.fd"
                          f" -drive if=pflash,format=raw,file={vars_fd}"
                          f" -drive file={disk},format=raw,if=virtio"
                      ),
                      name=f"target{n}",
                  )
                  machine.start()
                  machine.wait_for_console_text(f"serial: {serial}")
                  machine.crash()
            '';
          };
          # The example fleet's stick: its two hosts (one with its own profile, one with a
          # disko layout checked against its mounts) built and written by lib.mkInstaller.
          example-fleet = example.packages.${system}.installer;

          parse = pkgs.runCommand "parse-nix-files" { nativeBuildInputs = [ pkgs.nix ]; } ''
            for f in $(find ${self} -name '*.nix'); do nix-instantiate --parse "$f" > /dev/null; done
            touch $out
          '';
        });
    };
}
