//! The Redis URL, which may carry a password: kept whole only where the
//! client needs it, and shown everywhere else (errors, logs, `Debug`) with
//! its userinfo replaced by `***`.
//!
//! Invariant: no `Display` or `Debug` of a [`RedisUrl`], and no
//! [`BridgeError`](super::BridgeError), contains the URL's userinfo.

use std::fmt;

/// What stands in for the userinfo of a shown URL.
const MASK: &str = "***";

/// `url` fit to print: everything between the scheme's `://` (or the
/// start, without one) and the last `@` replaced by `***`. Works on any
/// string, parsed or not, so that a URL the client refused is redacted
/// too; the last `@` is taken because a password may hold `@` or `/`
/// (more hidden than needed beats a password shown).
pub fn redacted(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => format!("{}{MASK}{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

/// A Redis URL whose `Debug` and `Display` are [`redacted`]: the flag's
/// value keeps its password out of anything that prints the flags.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps `url` unchecked (see [`BridgeConfig::new`](super::BridgeConfig::new) for the check).
    pub fn new(url: &str) -> RedisUrl {
        RedisUrl(url.to_string())
    }

    /// The whole URL, password included: for the Redis client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({:?})", redacted(&self.0))
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden_whatever_its_shape() {
        let cases = [
            ("redis://:s3cret@redis:6379", "redis://***@redis:6379"),
            ("redis://alice:s3cret@10.0.0.5:6379/2", "redis://***@10.0.0.5:6379/2"),
            ("redis://s3cret@redis", "redis://***@redis"),
            // A password with '@' and '/' in it, unescaped.
            ("redis://:p@ss/w0rd@redis:6379", "redis://***@redis:6379"),
            // Not a URL the client takes, still redacted.
            ("http://u:s3cret@host", "http://***@host"),
            (":s3cret@host:6379", "***@host:6379"),
            // Nothing to hide.
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://", "redis://"),
        ];
        for (url, shown) in cases {
            assert_eq!(redacted(url), shown, "{url}");
            assert!(!redacted(url).contains("s3cret") && !redacted(url).contains("w0rd"));
        }
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let url = RedisUrl::new("redis://:hunter2@redis:6379");
        assert_eq!(url.expose(), "redis://:hunter2@redis:6379");
        for shown in [format!("{url}"), format!("{url:?}"), format!("{:?}", Some(url.clone()))] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("redis:6379"), "{shown}");
        }
    }
}
