# A database server: its disks as disko declares them (disko/db-1.nix). disko's module writes
# fileSystems from the same declaration, so what the host mounts is what the installer makes;
# mkinstaller checks that before the stick is written.
{ ... }:
{
  imports = [ ../disko/db-1.nix ];
  networking.hostName = "db-1";
  autoinstall.serials = [ "EXAMPLE-SN-0101" ];
}
