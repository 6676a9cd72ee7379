# The installer system as a NixOS module: a minimal system that boots from a stick (kernel +
# initrd holding the whole system, as netboot images do), starts autoinstall-terminal on the
# serial console and on tty1, and carries the file system tools the profiles need. No
# passwords, no network services.
#
# Import it into a NixOS configuration and set `autoinstall.installer.package`; the flake does
# both (nixosModules.installer, packages.installer-env). `config.system.build.autoinstallEnv`
# is the directory mkinstaller takes as --installer: kernel, initrd, cmdline,
# systemd-bootx64.efi (systemd-bootaa64.efi on aarch64-linux).
{ config, lib, pkgs, modulesPath, ... }:
let
  cfg = config.autoinstall.installer;
  # What the installer runs when the stick names SSH keys: the same contract as the Debian
  # environment's script (images/debian/sbin/autoinstall-remote-access), with OpenSSH.
  remoteAccess = pkgs.writeShellScriptBin "autoinstall-remote-access" ''
    set -eu
    keys=$1 name=$2
    install -D -m 0600 "$keys" /root/.ssh/authorized_keys
    ${pkgs.inetutils}/bin/hostname "$name" || true
    for i in /sys/class/net/*; do
      i=''${i##*/}
      [ -e "/sys/class/net/$i/device" ] || continue
      ${pkgs.iproute2}/bin/ip link set "$i" up || true
      ${pkgs.iproute2}/bin/ip -6 addr add fe80::47/64 dev "$i" 2>/dev/null || true
    done
    ${pkgs.systemd}/bin/systemctl start sshd.service
    for a in $(${pkgs.iproute2}/bin/ip -4 -o addr show scope global | ${pkgs.gawk}/bin/awk '{print $4}'); do
      echo "remote access: ssh root@''${a%/*}"
    done
    echo "remote access: ssh root@fe80::47%<interface>, or root@$name.local"
    echo "remote access: host key ed25519 $(${pkgs.openssh}/bin/ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | ${pkgs.gawk}/bin/awk '{print $2}')"
  '';
  urlArgs = lib.optionals (cfg.url != null) [ "--url" cfg.url ];
  # One installer at a time: the consoles race for the lock, the other one waits and says so.
  run = tty: pkgs.writeShellScript "autoinstall-on-${tty}" ''
    exec ${pkgs.util-linux}/bin/flock --verbose /run/autoinstall.lock \
      ${cfg.package}/bin/autoinstall-terminal ${lib.escapeShellArgs (urlArgs ++ cfg.extraArgs)}
  '';
  onTty = tty: {
    description = "autoinstall-terminal on ${tty}";
    # Online, the network must be up first (DHCP by the netboot profile's dhcpcd).
    after = [ "systemd-udev-settle.service" "local-fs.target" ]
      ++ lib.optional (cfg.url != null) "network-online.target";
    wants = [ "systemd-udev-settle.service" ]
      ++ lib.optional (cfg.url != null) "network-online.target";
    wantedBy = [ "multi-user.target" ];
    conflicts = [ "getty@${tty}.service" "serial-getty@${tty}.service" ];
    path = cfg.tools;
    environment.TERM = if lib.hasPrefix "ttyS" tty then "vt220" else "linux";
    serviceConfig = {
      ExecStart = run tty;
      StandardInput = "tty-force";
      StandardOutput = "tty";
      StandardError = "tty";
      TTYPath = "/dev/${tty}";
      TTYReset = true;
      TTYVHangup = true;
      # When the installer exits (an operator quit, or after-install = shell), a root shell.
      ExecStopPost = "${pkgs.systemd}/bin/systemctl start --no-block autologin@${tty}.service";
      Restart = "no";
    };
  };
in
{
  imports = [ (modulesPath + "/installer/netboot/netboot-minimal.nix") ];

  options.autoinstall.installer = {
    package = lib.mkOption {
      type = lib.types.package;
      description = "The package providing bin/autoinstall-terminal.";
    };
    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Arguments passed to autoinstall-terminal.";
    };
    consoles = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ "ttyS0" "tty1" ];
      description = "Consoles autoinstall-terminal runs on (one at a time, whichever starts first).";
    };
    trustedKeys = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "fleet-1:0E5tYf6GzJ8xbOxG5L6d4SV7qBSfbkF1y1hNp3XjJYk=" ];
      description = ''
        Nix public keys (name:base64) the installer trusts. With any, it installs only payloads
        whose manifest and store paths one of them signed (mkinstaller --sign-key); online
        installs require one.
      '';
    };
    caCertificates = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = "PEM file of the CA(s) an online install's HTTPS server must chain to, instead of the public roots.";
    };
    url = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "http://10.0.0.1/fleet";
      description = "Install online from this `mkinstaller --format cache` site instead of a stick.";
    };
    tools = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = with pkgs; [ e2fsprogs btrfs-progs dosfstools xfsprogs util-linux cryptsetup lvm2 mdadm ];
      description = "What the installer runs: mkfs and fsck for every profile's file systems, wipefs, swap, and the storage stack of disko layouts (cryptsetup, LVM, mdadm).";
    };
  };

  config = {
    boot.kernelParams = [ "console=tty0" "console=ttyS0,115200" "panic=30" ];
    boot.initrd.availableKernelModules = [
      "virtio_pci" "virtio_blk" "virtio_scsi" "virtio_net" "nvme" "ahci" "sd_mod" "sr_mod" "isofs"
      "usb_storage" "uas" "xhci_pci" "ehci_pci" "vfat" "nls_cp437" "nls_iso8859_1" "ext4" "btrfs"
    ];
    boot.supportedFilesystems = [ "ext4" "btrfs" "vfat" "xfs" ];
    # The storage stack the installer lays out (LUKS2, LVM, md RAID), loaded at boot as the
    # Debian environment loads them: device-mapper with LVM's targets, dm-crypt with the
    # ciphers and AF_ALG cryptsetup uses, md with its RAID levels. Not in the initrd: the
    # installer runs in stage 2, where every module of the kernel is available anyway.
    boot.kernelModules = [
      "dm_mod" "dm_crypt" "dm_thin_pool" "dm_snapshot" "dm_mirror" "dm_raid"
      "xts" "essiv" "algif_skcipher"
      "md_mod" "raid0" "raid1" "raid10" "raid456"
    ];
    # Not boot.swraid: its udev rules would assemble arrays found on a target disk, which the
    # installer then refuses as held; mdadm is in `tools` and is run by the installer alone.
    # The same mdadm.conf as the Debian environment: arrays keep their recorded names.
    environment.etc."mdadm.conf".text = ''
      HOMEHOST <ignore>
      AUTO +all
    '';
    environment.systemPackages = cfg.tools ++ [ cfg.package remoteAccess ];
    # SSH to the live installer, only when the stick names keys ([defaults]
    # ssh-authorized-keys): the installer then runs autoinstall-remote-access, which installs
    # them and starts sshd (host keys made at its first start, on this boot's tmpfs).
    services.openssh = {
      enable = true;
      settings.PasswordAuthentication = false;
      settings.KbdInteractiveAuthentication = false;
      settings.PermitRootLogin = "prohibit-password";
    };

    # Marks the installer environment: only here does `--finish auto` carry out the stick's
    # after-install action (reboot, poweroff).
    environment.etc."nixos-autoinstall/environment".text = "nixos\n";
    environment.etc."nixos-autoinstall/ca.pem" = lib.mkIf (cfg.caCertificates != null) {
      source = cfg.caCertificates;
    };
    environment.etc."nixos-autoinstall/trusted-keys" = lib.mkIf (cfg.trustedKeys != [ ]) {
      text = lib.concatMapStrings (k: k + "\n") cfg.trustedKeys;
    };

    # No password prompts anywhere: the stick is the credential.
    users.users.root.initialHashedPassword = "";
    services.getty.autologinUser = "root";
    systemd.services = lib.listToAttrs (map (tty: lib.nameValuePair "autoinstall-${tty}" (onTty tty)) cfg.consoles)
      // {
        # Started by autoinstall-remote-access only.
        sshd.wantedBy = lib.mkForce [ ];
        "autologin@" = {
          description = "root shell on %I after the installer";
          serviceConfig = {
            ExecStart = "${pkgs.util-linux}/sbin/agetty --autologin root --noclear %I 115200,38400,9600 $TERM";
            Type = "idle";
            Restart = "always";
          };
        };
      };
    networking.hostName = "autoinstall";
    networking.useDHCP = lib.mkDefault false;
    documentation.enable = false;
    system.stateVersion = lib.mkDefault "25.05";

    # What mkinstaller takes as --installer.
    system.build.autoinstallEnv = pkgs.runCommand "autoinstall-env" { } ''
      mkdir $out
      ln -s ${config.system.build.kernel}/${config.system.boot.loader.kernelFile} $out/kernel
      ln -s ${config.system.build.netbootRamdisk}/initrd $out/initrd
      # systemd-bootx64.efi, systemd-bootaa64.efi: the name tells mkinstaller the architecture.
      ln -s ${pkgs.systemd}/lib/systemd/boot/efi/systemd-boot${pkgs.stdenv.hostPlatform.efiArch}.efi \
        $out/systemd-boot${pkgs.stdenv.hostPlatform.efiArch}.efi
      echo "init=${config.system.build.toplevel}/init ${toString config.boot.kernelParams}" > $out/cmdline
    '';
  };
}
