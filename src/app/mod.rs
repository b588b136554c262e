//! What the server does with messages: the built-in application, one
//! implementation of [`Handler`](crate::server::Handler). It never touches
//! a socket.

pub mod command;
pub mod echo;

pub use echo::EchoApp;
