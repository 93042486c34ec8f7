//! The PROXY protocol parser on arbitrary bytes, in every mode: no panics, a header is never
//! longer than the input, it is self-delimiting, and no prefix of it is decided early (so
//! reading a header in pieces gives the same answer as reading it whole).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtls_shield::proxy::proxy_protocol::{parse, Parsed, ProxyProtocol, V1_MAX};

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(4096)];
    for mode in [
        ProxyProtocol::V1,
        ProxyProtocol::V2,
        ProxyProtocol::Optional,
    ] {
        let whole = parse(data, mode);
        if let Ok(Parsed::Header { len, source }) = &whole {
            assert!(*len <= data.len());
            assert!(*len >= 15, "shortest header is `PROXY UNKNOWN\\r\\n`");
            if data.starts_with(b"PROXY ") {
                assert!(*len <= V1_MAX);
            }
            let again = parse(&data[..*len], mode);
            assert_eq!(
                again,
                Ok(Parsed::Header {
                    len: *len,
                    source: *source
                }),
                "not self-delimiting"
            );
            for k in 0..*len {
                assert_eq!(
                    parse(&data[..k], mode),
                    Ok(Parsed::Incomplete),
                    "decided at {k}"
                );
            }
        }
        if let Ok(Parsed::NotProxy) = whole {
            assert_eq!(mode, ProxyProtocol::Optional);
        }
    }
});
