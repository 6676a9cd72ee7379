# db-1's disks, in disko's schema: a GPT disk with an ESP and an LVM volume group holding the
# root and a separate /var/lib/postgresql. The device is the by-id name of the machine's
# disk: on a machine that has it, the installer takes that disk; elsewhere the profile's rules
# (the largest disk) choose.
{
  disko.devices = {
    disk.main = {
      type = "disk";
      device = "/dev/disk/by-id/nvme-EXAMPLE_SSD_1TB_S0000000000001";
      content = {
        type = "gpt";
        partitions = {
          ESP = {
            size = "1G";
            type = "EF00";
            content = {
              type = "filesystem";
              format = "vfat";
              mountpoint = "/boot";
              mountOptions = [ "umask=0077" ];
            };
          };
          pv = {
            size = "100%";
            content = { type = "lvm_pv"; vg = "data"; };
          };
        };
      };
    };
    lvm_vg.data = {
      type = "lvm_vg";
      lvs = {
        root = {
          size = "40G";
          content = { type = "filesystem"; format = "ext4"; mountpoint = "/"; };
        };
        postgresql = {
          size = "100%FREE";
          content = { type = "filesystem"; format = "xfs"; mountpoint = "/var/lib/postgresql"; };
        };
      };
    };
  };
}
