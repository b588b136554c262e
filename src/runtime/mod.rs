//! What every event loop of the project needs, server or load generator,
//! and nothing about WebSockets: the timer wheel, the token that names a
//! connection in the poller, and the per-loop buffer pool.

pub mod buffer_pool;
pub mod timer;
pub mod token;

pub use buffer_pool::BufferPool;
pub use timer::{Links, TimerLink, TimerWheel};
pub use token::{token, untoken};
