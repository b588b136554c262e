//! Host limits and facts: the process's file limit now, and (for `doctor`,
//! the metrics and the load report) what the host is set to and what its
//! kernel holds (memory, from /proc; TCP memory, from /proc/net/sockstat).

pub mod doctor;
pub mod memory;
pub mod procfs;
pub mod rlimit;
pub mod sockstat;
