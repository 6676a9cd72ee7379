# A web server. Its disk is laid out by its profile, whose partitions are labelled as the
# file systems below name them.
{ ... }:
{
  networking.hostName = "web-1";

  # The machines that install this host: their SMBIOS system serials
  # (`dmidecode -s system-serial-number`). Two here: a spare takes over by serial.
  autoinstall.serials = [ "EXAMPLE-SN-0001" "EXAMPLE-SN-0002" ];
  # The installer profile: which disk, and (with no disko layout) its partitions.
  autoinstall.profile = ../profiles/workstation.toml;

  fileSystems."/" = { device = "/dev/disk/by-partlabel/nixos"; fsType = "ext4"; };
  fileSystems."/boot" = {
    device = "/dev/disk/by-partlabel/ESP";
    fsType = "vfat";
    options = [ "fmask=0077" "dmask=0077" ];
  };
}
