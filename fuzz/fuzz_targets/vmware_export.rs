#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let outcome = hyper2kvm::fuzzing::vmware_export(data);
    hyper2kvm::fuzzing::check(&outcome, data.len());
});
