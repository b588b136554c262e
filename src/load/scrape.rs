//! Reads the server's view from its `/metrics`: connections, RSS and open
//! descriptors, summed over every URL given (one per server process).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The server's figures at one moment (sums over all URLs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerView {
    /// Sum of `wsloop_connections`.
    pub connections: f64,
    /// Sum of `process_resident_memory_bytes`.
    pub rss: f64,
    /// Sum of `process_open_fds`.
    pub fds: f64,
}

/// A `/metrics` endpoint.
#[derive(Debug, Clone)]
pub struct MetricsUrl {
    addr: SocketAddr,
    host: String,
    path: String,
}

impl MetricsUrl {
    /// Parses `http://host:port/path`.
    pub fn parse(url: &str) -> Result<MetricsUrl, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("'{url}': only http:// metrics URLs"))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("'{url}': {e}"))?
            .next()
            .ok_or_else(|| format!("'{url}': no address"))?;
        let path = if path.is_empty() { "/metrics".to_string() } else { path.to_string() };
        Ok(MetricsUrl { addr, host: host.to_string(), path })
    }

    /// Fetches and parses the exposition.
    pub fn fetch(&self) -> std::io::Result<ServerView> {
        let timeout = Duration::from_secs(2);
        let mut s = TcpStream::connect_timeout(&self.addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(s, "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.path, self.host)?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        if !body.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other("metrics endpoint did not answer 200"));
        }
        Ok(parse_exposition(&body))
    }
}

/// Sums the series the load generator cares about.
pub fn parse_exposition(text: &str) -> ServerView {
    let mut view = ServerView::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        match name {
            "wsloop_connections" => view.connections += value,
            "process_resident_memory_bytes" => view.rss += value,
            "process_open_fds" => view.fds += value,
            _ => {}
        }
    }
    view
}

/// Fetches every URL and sums them; `None` if any fails.
pub fn fetch_all(urls: &[MetricsUrl]) -> Option<ServerView> {
    let mut total = ServerView::default();
    for u in urls {
        let v = u.fetch().ok()?;
        total.connections += v.connections;
        total.rss += v.rss;
        total.fds += v.fds;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_loop_series() {
        let text = "# HELP x\nwsloop_connections{loop=\"0\"} 3\nwsloop_connections{loop=\"1\"} 4\nprocess_resident_memory_bytes 1.5e6\nprocess_open_fds 12\nwsloop_connections_accepted_total 99\n";
        assert_eq!(parse_exposition(text), ServerView { connections: 7.0, rss: 1.5e6, fds: 12.0 });
    }

    #[test]
    fn urls() {
        assert!(MetricsUrl::parse("https://x/metrics").is_err());
        let u = MetricsUrl::parse("http://127.0.0.1:2112").unwrap();
        assert_eq!(u.path, "/metrics");
    }
}
