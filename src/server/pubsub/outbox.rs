//! Where a room publish goes beyond this process: the seam between
//! pub/sub and whatever links processes (the Redis bridge). The hub holds
//! one, if any; a loop's publish reaches it with one virtual call per
//! publish (not per member), which must never block the loop.

use std::sync::Arc;

use super::orders::Kick;
use super::publication::Publication;

/// A way out of the process for room publishes.
pub(crate) trait Outbox: Send + Sync + std::fmt::Debug {
    /// Hands a local publish on to other processes; never blocks (a full
    /// queue or a link that is down drops it, counted by the outbox).
    fn publish(&self, room: &Arc<str>, frame: &Arc<Publication>);
    /// Hands a kick (an admin API's disconnect of a room or a user) on to
    /// other processes; never blocks. False if it could not be queued.
    fn kick(&self, kick: &Kick) -> bool;
}
