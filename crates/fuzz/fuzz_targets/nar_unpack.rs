//! Unpacking any input must never panic and never create anything outside the target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let _ = nixstore::nar::unpack(data, &target, "out".as_ref());
    let beside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(
        beside.len(),
        1,
        "the unpacker created something beside its target"
    );
    let _ = nixstore::import::remove_tree(&target);
});
