//! What the server does with messages: the built-in applications, each an
//! implementation of [`Handler`](crate::server::Handler) that never touches
//! a socket. `wsloop serve --app NAME` picks one; `examples/` shows one
//! written outside the crate.

pub mod command;
pub mod echo;
pub mod plain_echo;
pub mod token_auth;

pub use echo::{EchoApp, PublishPolicy, DEFAULT_MAX_PUBLISH_SIZE};
pub use plain_echo::PlainEcho;
pub use token_auth::{TokenAuth, Tokens};

/// The built-in applications, by the name `--app` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BuiltinApp {
    /// Echo, the JSON ping/pong of load tests, and rooms ([`EchoApp`]).
    #[default]
    Echo,
    /// Every message back as it came, nothing parsed ([`PlainEcho`]).
    PlainEcho,
}

impl BuiltinApp {
    /// The name `--app` takes.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinApp::Echo => "echo",
            BuiltinApp::PlainEcho => "plain-echo",
        }
    }
}
