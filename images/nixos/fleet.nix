# The fleet of a flake, as hosts.toml: every NixOS configuration whose `autoinstall.serials`
# (nixosModules.host) is not empty becomes one [[host]], named after its attribute.
#
# Plain builtins only, no nixpkgs: the flake's `lib.hostsToml` and `lib.mkInstaller` import
# this file, and `mkinstaller --flake REF` passes the same text to `nix eval`, so a stick
# built either way comes from the same hosts.toml. Reads configurations with `or` defaults,
# so a configuration without the module (or a stub with only `config.autoinstall` and
# `config.system.build.toplevel`) is read too.
#
#   import ./fleet.nix { nixosConfigurations = …; defaults = { on-unknown-serial = "refuse"; }; }
#   → { toml = "version = 1 …"; drvPaths = [ … ]; hosts = [ "name" … ]; }
{ nixosConfigurations, defaults ? { } }:
let
  inherit (builtins) attrNames concatStringsSep filter isAttrs isBool isInt isList isPath
    isString all attrValues map match toJSON typeOf;

  # TOML values. A JSON string is a TOML basic string (Nix escapes ", \ and control
  # characters the way both read), and so are JSON integers, booleans and string arrays.
  key = k: if match "[A-Za-z0-9_-]+" k != null then k else toJSON k;
  value = where: v:
    if isString v || isInt v || isBool v then toJSON v
    # A path is copied into the store, so that a sandboxed build (lib.mkInstaller) has it;
    # a derivation (a key file made with writeText, say) is its output path.
    else if isPath v || (isAttrs v && v ? outPath) then toJSON "${v}"
    else if isList v then "[" + concatStringsSep ", " (map (value where) v) + "]"
    else if isAttrs v then
      "{ " + concatStringsSep ", " (map (k: "${key k} = ${value "${where}.${k}" v.${k}}") (attrNames v)) + " }"
    else throw "autoinstall: ${where}: a ${typeOf v} cannot be written to hosts.toml";
  line = where: k: v: "${key k} = ${value "${where}.${k}" v}\n";

  # disko's own attributes (`_create`, `_config`, …) hold functions and derivations; the
  # layout is the rest.
  strip = v:
    if isAttrs v then
      builtins.mapAttrs (_: strip) (removeAttrs v (filter (n: builtins.substring 0 1 n == "_") (attrNames v)))
    else if isList v then map strip v
    else v;
  diskoOf = name: c:
    let devices = strip (c.disko.devices or { }); in
    # The disko module declares every device kind, empty: a host that declares none has none.
    if all (d: d == { }) (attrValues devices) then null
    else builtins.toFile "${name}.disko.json" (builtins.unsafeDiscardStringContext (toJSON devices));

  hostBlock = name:
    let
      c = nixosConfigurations.${name}.config;
      a = c.autoinstall or { };
      where = "nixosConfigurations.${name}.config.autoinstall";
      set = k: v: if v == null || v == { } then "" else line where k v;
      disko = diskoOf name c;
    in
    "\n[[host]]\n"
    + line where "name" name
    + line where "serials" a.serials
    + line where "system" "${c.system.build.toplevel}"
    + set "profile" (a.profile or null)
    + set "disk" (a.disk or null)
    + (if disko == null then "" else line where "disko" disko)
    + set "luks-keys" (a.luksKeys or { })
    + set "extra-files" (a.extraFiles or null);

  hosts = filter (n: (nixosConfigurations.${n}.config.autoinstall.serials or [ ]) != [ ])
    (attrNames nixosConfigurations);
in
if hosts == [ ] then
  throw "autoinstall: no NixOS configuration sets autoinstall.serials (import nixosModules.host and give each host its machines' serials)"
else {
  inherit hosts;
  toml = "# Generated from the flake's nixosConfigurations (autoinstall.*); do not edit.\n"
    + "version = 1\n"
    + (if defaults == { } then "" else "\n[defaults]\n"
    + concatStringsSep "" (map (k: line "defaults" k defaults.${k}) (attrNames defaults)))
    + concatStringsSep "" (map hostBlock hosts);
  # What `mkinstaller --flake` builds, all in one `nix-store --realise`.
  drvPaths = map (n: nixosConfigurations.${n}.config.system.build.toplevel.drvPath) hosts;
}
