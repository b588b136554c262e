//! What every event loop of the project needs, server or load generator,
//! and nothing about WebSockets: the timer wheel, the token that names a
//! connection in the poller, the per-loop buffer pool, and the chain of
//! unsent output that keeps shared frames by reference.

pub mod buffer_pool;
pub mod chain;
pub mod timer;
pub mod token;

pub use buffer_pool::BufferPool;
pub use chain::Chain;
pub use timer::{Links, TimerLink, TimerWheel};
pub use token::{token, untoken};
