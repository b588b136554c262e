//! What one load process is told: where to connect, the plan to follow,
//! the scenario and its parameters. Built from the flags by `load::run`
//! (each child of a split run gets its share).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::plan::Plan;

/// Everything one load process needs.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The server's address.
    pub target: SocketAddr,
    /// The Host header.
    pub host: String,
    /// The request path.
    pub path: String,
    /// The scenario.
    pub scenario: Scenario,
    /// Connections over time.
    pub plan: Plan,
    /// New connections per second at most.
    pub rate: u32,
    /// Ping interval.
    pub interval: Duration,
    /// Echo payload size; fanout: about the size of a delivery.
    pub size: usize,
    /// Echo messages in flight per connection.
    pub depth: usize,
    /// Local addresses to connect from, round robin (empty: the kernel picks).
    pub source_ips: Vec<IpAddr>,
    /// Time allowed from connect to 101.
    pub connect_timeout: Duration,
    /// Fanout scenario: messages published per second.
    pub publish_rate: u32,
    /// Fanout scenario: broadcast (`{"type":"broadcast"}`) instead of publish.
    pub broadcast: bool,
    /// Offer permessage-deflate, and compress what is sent when agreed.
    pub compression: bool,
    /// What an echo message carries.
    pub payload: Payload,
    /// `wss://`: the TLS client every connection speaks through.
    pub tls: Option<super::tls::TlsClient>,
    /// `--reconnect`: connect again after the server closes a connection,
    /// this far apart; `None`: a closed connection stays closed.
    pub reconnect: Option<super::backoff::Backoff>,
}

/// What each connection does once open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Scenario {
    /// Connect and hold (answering the server's pings).
    Idle,
    /// Send `{"type":"ping","payload":..}` every interval and check the pong.
    Ping,
    /// Keep `depth` binary messages of `size` bytes in flight; verify echoes.
    Echo,
    /// Connect, one message, close, repeat.
    Churn,
    /// Every connection joins one room; one of them publishes to it at
    /// `--publish-rate`; every other receives. Measures deliveries and
    /// publish-to-delivery latency.
    Fanout,
}

impl Scenario {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Ping => "ping",
            Scenario::Echo => "echo",
            Scenario::Churn => "churn",
            Scenario::Fanout => "fanout",
        }
    }
}

/// What the echo scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    /// Binary: the message number, then a byte pattern.
    Pattern,
    /// Text: a JSON chat message (user, room, words), as chat services send.
    Chat,
}
