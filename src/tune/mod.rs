//! Host limits: the process's file limit now, and (for `doctor`) what the
//! host is set to and what its kernel holds (memory, from /proc).

pub mod doctor;
pub mod procfs;
pub mod rlimit;
