//! What the load generator parses: the server's reply to its upgrade and
//! the frames after it, as arbitrary bytes in arbitrary pieces. Never
//! panics; an accepted reply is accepted at the same length on every longer
//! prefix; the frames decode the same in pieces as in one read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::ws::client::parse_response;
use wsloop::ws::{Config, Session};
use wsloop_fuzz::{feed, Plan};

/// The key whose accept value is RFC 6455's example, s3pPLMBiTxaQ9kYGzzhZRbK+xOo=.
const KEY: &[u8; 24] = b"dGhlIHNhbXBsZSBub25jZQ==";

fuzz_target!(|data: &[u8]| {
    let plan = Plan::new(data);
    let mut accepted = None;
    for end in plan.ends() {
        match parse_response(&plan.body[..end], KEY) {
            Ok(None) => continue,
            Ok(Some(n)) => {
                assert!(n <= end);
                assert_eq!(parse_response(plan.body, KEY).ok(), Some(Some(n)));
                accepted = Some(n);
            }
            Err(_) => {}
        }
        break;
    }
    let Some(n) = accepted else { return };
    // The load generator's side of the frames: the client role.
    let frames = &plan.body[n..];
    let cfg = Config::default();
    let split = feed(Session::client(), frames.chunks(7), &cfg);
    let whole = feed(Session::client(), [frames], &cfg);
    // Clients mask what they write with random keys: compare all but that.
    assert_eq!((split.events, split.error), (whole.events, whole.error));
});
