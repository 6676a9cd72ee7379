# What every host of the example fleet shares. The installer installs each host's own boot
# loader (here systemd-boot) from its configuration.
{ ... }:
{
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;
  services.openssh.enable = true;
  users.users.root.openssh.authorizedKeys.keys = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDLjH9EDZZwU6cXEIjCjd5EwmhDrmRuznNX4C3Z3a/kg admin@example"
  ];
  system.stateVersion = "25.05";
}
