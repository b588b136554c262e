//! Host limits: the process's file limit now, and (for `doctor`) what the
//! host is set to.

pub mod doctor;
pub mod rlimit;
