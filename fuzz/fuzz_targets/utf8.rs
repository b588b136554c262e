//! The incremental UTF-8 validator on arbitrary bytes in arbitrary pieces,
//! against std's validator: it accepts exactly valid UTF-8, and it fails on
//! the first piece after which the text can no longer become valid (fail
//! fast), never sooner and never later.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::ws::utf8::Utf8Validator;
use wsloop_fuzz::Plan;

/// True if `prefix` is the start of some valid UTF-8 text.
fn can_become_valid(prefix: &[u8]) -> bool {
    match std::str::from_utf8(prefix) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

fuzz_target!(|data: &[u8]| {
    let plan = Plan::new(data);
    let ends = plan.ends();
    let mut v = Utf8Validator::new();
    let mut start = 0;
    for (i, &end) in ends.iter().enumerate() {
        let last = i + 1 == ends.len();
        let result = v.feed(&plan.body[start..end], last);
        v.debug_check_invariants();
        let prefix = &plan.body[..end];
        let expected = if last { std::str::from_utf8(prefix).is_ok() } else { can_become_valid(prefix) };
        assert_eq!(result.is_ok(), expected, "piece {i} ending at {end}");
        if result.is_err() {
            return;
        }
        start = end;
    }
    if ends.is_empty() {
        assert!(v.feed(b"", true).is_ok());
    }
    assert!(v.is_complete());
});
