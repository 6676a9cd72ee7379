//! A sealed secrets file from a stick or a site (age, scrypt) must never panic, hang or ask
//! for more than the work factor installers accept, whatever its bytes; and sealed secrets
//! that open must be exactly what was sealed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = secrets::open(data, "the fleet passphrase", "host-1", Some("fleet"));
    // The fuzzer's bytes as extra-file contents: sealed (cheaply) and opened, the same bytes.
    let bundle = secrets::Bundle::new(
        "host-1",
        None,
        vec![secrets::File {
            target: "etc/x".into(),
            mode: 0o600,
            data: data.to_vec(),
        }],
        Vec::new(),
    );
    let sealed = bundle.seal("pp", 1).expect("small bundles seal");
    assert_eq!(secrets::open(&sealed, "pp", "host-1", None), Ok(bundle));
});
