# The fleet's hosts.toml [defaults] (README: hosts.toml), as a Nix attribute set. Keys are
# written as in hosts.toml.
{
  # A machine whose serial is in no host: record it on the stick and touch nothing
  # (`mkinstaller reports --pending STICK` then prints its hosts block).
  on-unknown-serial = "enrol";
  after-install = "reboot";
  # The countdown before the disk is erased; 0 for none.
  confirm-seconds = 10;
  # Signed into every manifest: an installer told its fleet refuses another fleet's stick.
  fleet = "example";
  # Admins who may log in to the live installer over SSH to watch or answer it.
  ssh-authorized-keys = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDLjH9EDZZwU6cXEIjCjd5EwmhDrmRuznNX4C3Z3a/kg admin@example"
  ];
}
