//! Reads the server's view from its `/metrics`: connections, memory and
//! open descriptors, summed over every URL given (one per server process).
//! Fifty processes are scraped at once, each on a thread of its own, so one
//! slow process delays a round by at most its timeout, never by the sum.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The server's figures at one moment (sums over all URLs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerView {
    /// Sum of `wsloop_connections`.
    pub connections: f64,
    /// Sum of `process_resident_memory_bytes` (counts the binary's shared
    /// pages once per process).
    pub rss: f64,
    /// Sum of `wsloop_resident_anon_bytes`: what the processes hold of their
    /// own (0 from a server too old to export it).
    pub anon: f64,
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
        let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.path, self.host);
        s.write_all(request.as_bytes())?;
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
            "wsloop_resident_anon_bytes" => view.anon += value,
            "process_open_fds" => view.fds += value,
            _ => {}
        }
    }
    view
}

impl ServerView {
    fn add(self, o: ServerView) -> ServerView {
        ServerView {
            connections: self.connections + o.connections,
            rss: self.rss + o.rss,
            anon: self.anon + o.anon,
            fds: self.fds + o.fds,
        }
    }
}

/// Fetches every URL at once, one thread each; each answer or failure in
/// the order of `urls`.
fn fetch_each(urls: &[MetricsUrl]) -> Vec<Option<ServerView>> {
    std::thread::scope(|scope| {
        let fetches: Vec<_> = urls.iter().map(|u| scope.spawn(move || u.fetch().ok())).collect();
        fetches.into_iter().map(|f| f.join().ok().flatten()).collect()
    })
}

/// Fetches every URL and sums them; `None` if any fails.
pub fn fetch_all(urls: &[MetricsUrl]) -> Option<ServerView> {
    fetch_each(urls).into_iter().try_fold(ServerView::default(), |sum, v| Some(sum.add(v?)))
}

/// Scrapes a set of URLs round after round, remembering each one's last
/// answer: a process that misses one round (busy, a full accept queue)
/// keeps its last figures in the sum instead of voiding the whole sample.
#[derive(Debug)]
pub struct Scraper {
    urls: Vec<MetricsUrl>,
    last: Vec<Option<ServerView>>,
}

impl Scraper {
    /// A scraper that has heard from none of `urls` yet.
    pub fn new(urls: Vec<MetricsUrl>) -> Scraper {
        let last = vec![None; urls.len()];
        Scraper { urls, last }
    }

    /// One round; the sum of every URL's latest answer, `None` until each
    /// has answered at least once.
    pub fn round(&mut self) -> Option<ServerView> {
        for (last, now) in self.last.iter_mut().zip(fetch_each(&self.urls)) {
            if now.is_some() {
                *last = now;
            }
        }
        self.last.iter().try_fold(ServerView::default(), |sum, v| Some(sum.add((*v)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_loop_series() {
        let text = "# HELP x\nwsloop_connections{loop=\"0\"} 3\nwsloop_connections{loop=\"1\"} 4\nprocess_resident_memory_bytes 1.5e6\nprocess_open_fds 12\nwsloop_connections_accepted_total 99\n";
        assert_eq!(parse_exposition(text), ServerView { connections: 7.0, rss: 1.5e6, anon: 0.0, fds: 12.0 });
        let text = "wsloop_resident_anon_bytes 4096\n";
        assert_eq!(parse_exposition(text).anon, 4096.0);
    }

    #[test]
    fn a_missed_round_keeps_the_last_answer() {
        let up = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = MetricsUrl::parse(&format!("http://{}/metrics", up.local_addr().unwrap())).unwrap();
        let body = "wsloop_connections 3\nprocess_open_fds 9\n";
        let answer = std::thread::spawn(move || {
            let (mut s, _) = up.accept().unwrap();
            // The whole request: closing with some of it unread would reset.
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
            // Dropped: nobody listens there any more.
        });
        let mut scraper = Scraper::new(vec![url.clone()]);
        let first = scraper.round();
        answer.join().unwrap();
        assert_eq!(first.map(|v| (v.connections, v.fds)), Some((3.0, 9.0)));
        assert_eq!(fetch_all(std::slice::from_ref(&url)), None, "the endpoint is gone");
        assert_eq!(scraper.round().map(|v| v.connections), Some(3.0), "the last answer stands in");
        let never = MetricsUrl::parse("http://127.0.0.1:1/metrics").unwrap();
        assert_eq!(Scraper::new(vec![url, never]).round(), None, "a URL never heard from voids the sum");
    }

    #[test]
    fn urls() {
        assert!(MetricsUrl::parse("https://x/metrics").is_err());
        let u = MetricsUrl::parse("http://127.0.0.1:2112").unwrap();
        assert_eq!(u.path, "/metrics");
    }
}
