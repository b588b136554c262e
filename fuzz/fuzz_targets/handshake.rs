//! The server's upgrade-request parser on arbitrary bytes, delivered in
//! arbitrary pieces. Never panics; parsing piece by piece (which skips
//! re-parsing until a line ends) agrees with parsing each prefix afresh;
//! every outcome can be answered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::ws::handshake::{parse_request, write_accept, write_reject, HandshakeConfig};
use wsloop_fuzz::Plan;

fuzz_target!(|data: &[u8]| {
    let plan = Plan::new(data);
    let cfg = HandshakeConfig {
        max_header_size: 1024,
        allowed_origins: vec!["https://a.example".into()],
        protocols: vec!["chat".into(), "json".into()],
        ..HandshakeConfig::default()
    };
    let mut scanned = 0;
    for end in plan.ends() {
        let prefix = &plan.body[..end];
        let incremental = parse_request(prefix, &mut scanned, &cfg);
        let fresh = parse_request(prefix, &mut 0, &cfg);
        let mut out = Vec::new();
        match incremental {
            Ok(None) => continue,
            Ok(Some(req)) => {
                // A whole request is parsed on its last line, so afresh too.
                assert_eq!(fresh, Ok(Some(req)));
                assert!(req.head_len <= prefix.len() && req.head_len <= cfg.max_header_size);
                write_accept(&mut out, &req);
                assert!(out.starts_with(b"HTTP/1.1 101 ") && out.ends_with(b"\r\n\r\n"));
            }
            Err(e) => {
                // Piece by piece can fail later than afresh, never sooner.
                assert!(fresh.is_err(), "{e:?} but afresh {fresh:?}");
                write_reject(&mut out, e);
                assert!(out.starts_with(b"HTTP/1.1 4") || out.starts_with(b"HTTP/1.1 5"));
            }
        }
        break;
    }
});
