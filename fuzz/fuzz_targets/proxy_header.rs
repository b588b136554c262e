//! The PROXY protocol header parser, fed its input piece by piece as a
//! socket would deliver it. Never panics, and keeps the parser's promises:
//! `Incomplete` asks for more than it was given and never past the bounds;
//! once a prefix is refused every longer input is refused; once a prefix
//! is whole, every longer input gives the same header (nothing after the
//! header changes it), no longer than its bound and the bytes given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::server::proxy_protocol::{parse, Parsed, MAX_HEADER, MAX_V1};
use wsloop_fuzz::Plan;

fuzz_target!(|data: &[u8]| {
    let plan = Plan::new(data);
    let mut verdict: Option<Result<Parsed, _>> = None;
    for end in plan.ends() {
        let given = &plan.body[..end];
        let now = parse(given);
        match (&verdict, now) {
            (Some(Err(_)), now) => assert!(now.is_err(), "refused at a prefix, {now:?} at {end}"),
            (Some(Ok(done @ Parsed::Done(_))), now) => assert_eq!(now, Ok(*done), "at {end}"),
            _ => {}
        }
        match now {
            Ok(Parsed::Incomplete { wanted }) => {
                assert!(wanted > end && wanted <= MAX_HEADER, "wanted {wanted} with {end}");
            }
            Ok(Parsed::Done(header)) => {
                assert!(header.len <= end && header.len <= MAX_HEADER && header.len >= 15);
                if given[0] == b'P' {
                    assert!(header.len <= MAX_V1 && given[..header.len].ends_with(b"\r\n"));
                }
            }
            Err(_) => {}
        }
        if !matches!(now, Ok(Parsed::Incomplete { .. })) {
            verdict = Some(now);
        }
    }
});
