//! Both sides' steps of the Redis cut (`bridge/cut.rs`) during a
//! hand-off: the old process names its rooms and a marker token, the new
//! one subscribes to them and holds messages back, the old one publishes
//! the marker and waits to see it before its loops export.

use std::time::{Duration, Instant};

use super::state::Reader;
use super::wire::{Kind, Link};
use super::Controls;

/// How long each side waits for Redis (a subscription, the marker).
const REDIS_WAIT: Duration = Duration::from_secs(5);

/// Waits up to [`REDIS_WAIT`] for `done`.
fn wait_for(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + REDIS_WAIT;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Old side, its loops frozen: tells the new process its rooms and the
/// marker token, and once the new one has subscribed, publishes the
/// marker and waits until its own subscriber has passed it (so every
/// message before it is in the loops' inboxes, ahead of the export, and
/// none after it: [`old_done`] lets them through again).
pub(super) fn old_side(link: &mut Link, controls: &Controls) -> std::io::Result<()> {
    let Some((cut, directory)) = &controls.redis else {
        link.send(Kind::Rooms, &0u16.to_le_bytes(), &[])?;
        // No cut without a bridge; the answer says nothing more.
        return link.recv_answer().map(drop);
    };
    let token = format!("{:016x}{:016x}", crate::ws::mask::random_u64(), crate::ws::mask::random_u64());
    let (_, rooms) = directory.snapshot();
    let mut body = (token.len() as u16).to_le_bytes().to_vec();
    body.extend_from_slice(token.as_bytes());
    for room in rooms.iter().filter(|r| r.len() <= super::state::MAX_ROOM_NAME) {
        body.extend_from_slice(&(room.len() as u16).to_le_bytes());
        body.extend_from_slice(room.as_bytes());
    }
    link.send(Kind::Rooms, &body, &[])?;
    let answer = link.recv_answer()?;
    if answer.kind != Kind::Subscribed || answer.body.first() != Some(&1) {
        log::warn!("hand-off: the new process could not subscribe in Redis; publishes from other hosts in the next moments may be missed");
        return Ok(());
    }
    cut.arm(token.into_bytes(), false);
    let cut_made = wait_for(|| cut.subscribed(0)) && cut.publish_marker() && wait_for(|| cut.seen());
    if !cut_made {
        log::warn!("hand-off: the Redis marker did not come back; publishes from other hosts in the next moments may be missed or repeated");
    }
    Ok(())
}

/// Old side, the hand-off over: messages reach what is here again; those
/// kept since the marker are delivered if it `failed` (the members are
/// still here), dropped if it committed (the new process has them).
pub(super) fn old_done(controls: &Controls, failed: bool) {
    if let Some((cut, _)) = &controls.redis {
        cut.release(&controls.hub, failed);
    }
}

/// New side: the rooms and token the old process sent, subscribed and
/// armed. Returns the rooms held in the directory (released by
/// [`release`] once the connections are adopted).
pub(super) fn new_side(link: &mut Link, controls: &Controls) -> std::io::Result<Vec<std::sync::Arc<str>>> {
    let msg = link.recv()?;
    if msg.kind != Kind::Rooms {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "hand-off: no rooms message"));
    }
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "hand-off: a bad rooms message");
    let mut r = Reader { rest: &msg.body };
    let token_len = r.u16().map_err(|_| bad())? as usize;
    let token = r.take(token_len).map_err(|_| bad())?.to_vec();
    let mut rooms: Vec<std::sync::Arc<str>> = Vec::new();
    while !r.rest.is_empty() {
        let len = r.u16().map_err(|_| bad())? as usize;
        if len > super::state::MAX_ROOM_NAME {
            return Err(bad());
        }
        let name = std::str::from_utf8(r.take(len).map_err(|_| bad())?).map_err(|_| bad())?;
        rooms.push(name.into());
    }
    let Some((cut, directory)) = controls.redis.as_ref().filter(|_| !token.is_empty()) else {
        link.send(Kind::Subscribed, &[0], &[])?;
        return Ok(Vec::new());
    };
    for room in &rooms {
        directory.opened(room);
    }
    cut.arm(token, true);
    let generation = directory.generation();
    let ok = wait_for(|| cut.subscribed(generation));
    link.send(Kind::Subscribed, &[u8::from(ok)], &[])?;
    if !ok {
        // Still kept back until the members are in: some may repeat.
        log::warn!("hand-off: could not subscribe to the rooms in Redis in time; taking over without the cut");
    }
    Ok(rooms)
}

/// New side, every connection adopted: what came after the marker goes
/// to the members, and the rooms held for them are theirs now.
pub(super) fn release(controls: &Controls, held: Vec<std::sync::Arc<str>>) {
    let Some((cut, directory)) = &controls.redis else { return };
    if !held.is_empty() {
        wait_for(|| cut.seen());
    }
    let kept = cut.release(&controls.hub, false);
    log::info!("hand-off: {kept} publishes from other hosts arrived during the hand-off; delivered");
    for room in &held {
        directory.closed(room);
    }
}
