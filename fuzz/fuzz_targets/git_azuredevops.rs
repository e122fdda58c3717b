#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fluxtrail_fuzz::git_parse(fluxtrail::git::Provider::AzureDevOps, data)
});
