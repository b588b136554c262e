//! A connection's life apart from its I/O: when it is timed, paused,
//! pinged, drained, lingered and dropped, and under which reason it is
//! counted. It takes [`Signal`]s (input was handled, the peer took bytes,
//! EOF, a fault, the timer fired, shutdown) with the [`Facts`] a driver
//! knows, and answers [`Actions`] (arm this timer, queue this close frame,
//! ping, read again, shut down the write side, close for this reason).
//!
//! It owns no socket and reads no clock, so every ending is a unit test
//! below, and each I/O driver (epoll, io_uring, with TLS between either and the
//! protocol) applies the same rules. The protocol's own state (handshake, open,
//! close sent, closed) is the [`Session`](crate::ws::Session)'s; a
//! connection's [`Stage`] is what the engine adds on top.
//!
//! ```text
//!  Serving <--pong/input-- Pinged          (idle timer -> ping; pong timer -> close)
//!     |  \--backlog > cap--> Paused --drained to cap/2--> Serving
//!     |   (its replies, or a publish)
//!     |                        | send timer: 1008 queued
//!     +--fault / close--> Draining(reason) --backlog empty--> Lingering(reason) --EOF--> closed
//!     |                       | (normal: closed at once)           | close timer: closed
//!     +--retire (paced drain, max age): 1012 queued --> Draining(restart | max_age)
//! ```
//!
//! Size: 2 bytes (a tag and a reason).

use crate::ws::Phase;

mod reason;

pub(crate) use reason::io_reason;
pub use reason::CloseReason;

/// Where a connection is in its life, beside its protocol phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading, handling, writing; the handshake or idle timer runs.
    Serving,
    /// Serving, with the idle ping out: the pong deadline runs.
    Pinged,
    /// Its own replies filled the backlog past the cap: reads are paused
    /// until half has drained, and the send deadline runs.
    Paused,
    /// Ending for this reason: what is queued (a close frame, an HTTP
    /// refusal) drains; input is read and discarded.
    Draining(CloseReason),
    /// Ending for this reason: our write side is shut down (FIN sent), and
    /// input is discarded until the peer's EOF, so that closing cannot turn
    /// into a reset that destroys the last bytes we sent.
    Lingering(CloseReason),
}

/// The timeouts a connection's one timer runs, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Accept to a complete upgrade request.
    Handshake,
    /// Silence before the idle ping.
    Idle,
    /// The idle ping to any answer.
    Pong,
    /// Our close frame (or a finish) to the end.
    Close,
    /// A paused connection's peer taking nothing.
    Send,
}

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A read turn decoded and handled input, and its replies were written
    /// or queued; the session went from `before` to `after`.
    Handled {
        /// The protocol phase before the turn.
        before: Phase,
        /// The protocol phase after it.
        after: Phase,
    },
    /// The kernel took some of the backlog that was queued.
    Progress,
    /// A room publish was written or queued; of the backlog it found,
    /// `earlier_unsent` bytes are still unsent.
    Published {
        /// Bytes queued before the publish that the kernel has not taken.
        earlier_unsent: usize,
    },
    /// The peer's EOF was read.
    Eof,
    /// Something ends the connection: a protocol error, a refused upgrade,
    /// a socket error, a failed shutdown of the write side.
    Fault(CloseReason),
    /// The connection's timer fired.
    Timer,
    /// The server began a graceful shutdown.
    Shutdown,
    /// The process is over its memory budget and this connection is among
    /// the largest holders: it is told why, then finished.
    OverBudget(Goodbye),
    /// The server asks it to leave and come back (a paced drain, or its
    /// maximum age): 1012 with a reconnect hint, then finished, counted
    /// under the reason given (`Restart` or `MaxAge`).
    Retire(CloseReason),
}

/// What the driver knows about the connection when it signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The session's protocol phase now.
    pub phase: Phase,
    /// Bytes waiting in the write backlog now.
    pub queued: usize,
    /// The backlog cap (`--max-backlog`).
    pub max_backlog: usize,
    /// The server is shutting down: a normal close counts as `Shutdown`.
    pub shutting_down: bool,
}

/// One thing the driver must do, in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Arm the connection's one timer with this timeout (replacing any).
    Arm(Timeout),
    /// Queue this close frame behind the backlog (nothing if the session is
    /// no longer open).
    QueueClose(Goodbye),
    /// Send the idle ping.
    Ping,
    /// Read the socket now: input may be waiting with no readiness edge
    /// left to report it.
    ReadAgain,
    /// Shut down our write side (FIN). If that fails, signal a fault.
    ShutdownWrite,
    /// Signal `Fault(reason)` now, with the facts as the actions before
    /// left them (a close frame just queued may already be written). Last.
    Finish(CloseReason),
    /// Remove the connection, counted under this reason. Always last.
    Close(CloseReason),
}

/// The actions one signal calls for: at most four, on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions {
    list: [Option<Action>; 4],
    len: u8,
}

impl Actions {
    fn push(&mut self, a: Action) {
        debug_assert!((self.len as usize) < self.list.len(), "{self:?} + {a:?}");
        debug_assert!(!self.closes(), "nothing follows a close");
        self.list[self.len as usize] = Some(a);
        self.len += 1;
    }

    fn one(a: Action) -> Actions {
        let mut actions = Actions::default();
        actions.push(a);
        actions
    }

    /// The actions, in order.
    pub fn iter(&self) -> impl Iterator<Item = Action> + '_ {
        self.list[..self.len as usize].iter().flatten().copied()
    }

    /// A normal close while the server shuts down is counted as `Shutdown`.
    fn counted_as_shutdown(mut self) -> Actions {
        for a in self.list.iter_mut().flatten() {
            if *a == Action::Close(CloseReason::Normal) {
                *a = Action::Close(CloseReason::Shutdown);
            }
        }
        self
    }

    /// True if nothing may follow: the connection is removed, or its
    /// life goes on under a new signal.
    pub fn closes(&self) -> bool {
        self.iter().any(|a| matches!(a, Action::Close(_) | Action::Finish(_)))
    }
}

/// Reasons after which what is queued is still worth delivering: a close
/// frame, an HTTP refusal or a TLS alert that tells the peer why.
fn is_graceful(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::Normal
            | CloseReason::ProtocolError
            | CloseReason::HandshakeFailed
            | CloseReason::SlowConsumer
            | CloseReason::TlsFailed
            | CloseReason::Shutdown
            | CloseReason::MemoryBudget
            | CloseReason::Restart
            | CloseReason::MaxAge
            | CloseReason::TokenExpired
            | CloseReason::RateLimited
            | CloseReason::Kicked
    )
}

/// A close frame the engine itself sends. One byte, so that [`Actions`]
/// stay small on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    /// 1008: the peer cannot keep up.
    SlowConsumer,
    /// 1001: the server is shutting down.
    Shutdown,
    /// 1009: its unfinished message is more than the memory budget allows.
    TooBig,
    /// 1013: the server is over its memory budget; try again later.
    TryAgainLater,
    /// 1012: service restart. The engine adds a jittered reconnect hint to
    /// the reason text (`service restart; reconnect in 1234 ms`).
    Restart,
    /// 1008: the connection's token expired.
    TokenExpired,
}

impl Goodbye {
    /// The close code and reason on the wire.
    pub fn frame(self) -> (u16, &'static str) {
        match self {
            Goodbye::SlowConsumer => (1008, "slow consumer: backlog over the cap"),
            Goodbye::Shutdown => (1001, "server shutting down"),
            Goodbye::TooBig => (1009, "message too big for the server's memory budget"),
            Goodbye::TryAgainLater => (1013, "server over its memory budget, try again later"),
            Goodbye::Restart => (1012, "service restart"),
            Goodbye::TokenExpired => (1008, "token expired"),
        }
    }

    /// What a connection asked to leave for `reason` is told.
    pub fn asking_to_leave(reason: CloseReason) -> Goodbye {
        match reason {
            CloseReason::TokenExpired => Goodbye::TokenExpired,
            _ => Goodbye::Restart,
        }
    }
}

impl Stage {
    /// The reason a connection that is ending will be counted under.
    pub fn ending(self) -> Option<CloseReason> {
        match self {
            Stage::Draining(r) | Stage::Lingering(r) => Some(r),
            _ => None,
        }
    }

    /// True while its input is only drained, never handled.
    pub fn is_ending(self) -> bool {
        self.ending().is_some()
    }

    /// Applies `signal`: the new stage is kept here, the actions returned.
    pub fn on(&mut self, signal: Signal, facts: Facts) -> Actions {
        let actions = self.step(signal, facts);
        if facts.shutting_down {
            actions.counted_as_shutdown()
        } else {
            actions
        }
    }

    fn step(&mut self, signal: Signal, facts: Facts) -> Actions {
        match signal {
            Signal::Handled { before, after } => self.on_handled(before, after, facts),
            Signal::Progress => self.on_progress(facts),
            Signal::Published { earlier_unsent } if earlier_unsent > facts.max_backlog && !self.is_ending() => {
                self.cut_off()
            }
            Signal::Published { .. } => self.on_published(facts),
            Signal::Eof => match (self.ending(), facts.phase) {
                (Some(r), _) => Actions::one(Action::Close(r)),
                (None, Phase::Closed) => self.finish(CloseReason::Normal, facts),
                (None, _) => self.finish(CloseReason::PeerGone, facts),
            },
            Signal::Fault(reason) => self.finish(reason, facts),
            Signal::Timer => self.on_timer(facts),
            Signal::Shutdown => self.on_shutdown(facts),
            Signal::OverBudget(_) if self.is_ending() => Actions::default(),
            Signal::OverBudget(goodbye) => {
                let mut actions = Actions::one(Action::QueueClose(goodbye));
                actions.push(Action::Finish(CloseReason::MemoryBudget));
                actions
            }
            Signal::Retire(reason) => self.on_retire(reason, facts),
        }
    }

    /// Asked to leave: an open connection is told 1012 and finished like
    /// any other graceful ending (its close frame drains, FIN, linger, all
    /// bounded by the close timeout); one mid-handshake has nobody to tell
    /// and closes now; one already ending, or whose close handshake is
    /// under way, is left to it.
    fn on_retire(&mut self, reason: CloseReason, facts: Facts) -> Actions {
        match facts.phase {
            _ if self.is_ending() => Actions::default(),
            Phase::Open => {
                let mut actions = Actions::one(Action::QueueClose(Goodbye::asking_to_leave(reason)));
                actions.push(Action::Finish(reason));
                actions
            }
            Phase::CloseSent => Actions::default(),
            Phase::Handshake | Phase::Closed => Actions::one(Action::Close(reason)),
        }
    }

    fn on_handled(&mut self, before: Phase, after: Phase, facts: Facts) -> Actions {
        debug_assert!(!self.is_ending(), "an ending connection's input is not handled");
        if after == Phase::Closed {
            // The close handshake completed (our echo of it may be queued).
            return self.finish(CloseReason::Normal, facts);
        }
        let mut actions = Actions::default();
        if facts.queued > facts.max_backlog {
            *self = Stage::Paused;
            actions.push(Action::Arm(Timeout::Send));
        } else if after == Phase::Open {
            // Any input is a sign of life: an outstanding ping is answered.
            *self = Stage::Serving;
            actions.push(Action::Arm(Timeout::Idle));
        } else if after == Phase::CloseSent && before == Phase::Open {
            // The application closed just now: the peer has to answer.
            actions.push(Action::Arm(Timeout::Close));
        }
        actions
    }

    /// A publish the member could take (its earlier backlog was under the
    /// cap) that left it over the cap: it is paused like a reader of its
    /// own replies, and the send deadline runs, so a member that takes
    /// nothing more is cut off (1008) however large the publish was. One
    /// already paused keeps its deadline: publishes do not extend it.
    fn on_published(&mut self, facts: Facts) -> Actions {
        match *self {
            Stage::Serving | Stage::Pinged if facts.queued > facts.max_backlog => {
                *self = Stage::Paused;
                Actions::one(Action::Arm(Timeout::Send))
            }
            _ => Actions::default(),
        }
    }

    fn on_progress(&mut self, facts: Facts) -> Actions {
        match *self {
            Stage::Paused if facts.queued > facts.max_backlog / 2 => Actions::one(Action::Arm(Timeout::Send)),
            Stage::Paused => {
                *self = Stage::Serving;
                let timeout = if facts.phase == Phase::CloseSent { Timeout::Close } else { Timeout::Idle };
                let mut actions = Actions::one(Action::Arm(timeout));
                actions.push(Action::ReadAgain);
                actions
            }
            Stage::Draining(reason) if facts.queued == 0 => self.drained(reason),
            _ => Actions::default(),
        }
    }

    fn on_timer(&mut self, facts: Facts) -> Actions {
        let close = |r| Actions::one(Action::Close(r));
        match (*self, facts.phase) {
            // A finishing connection that timed out stays counted under its
            // fault; one that only waited out a close handshake timed out.
            (Stage::Draining(r) | Stage::Lingering(r), _) if r != CloseReason::Normal => close(r),
            (Stage::Draining(_) | Stage::Lingering(_), _) => close(CloseReason::CloseTimeout),
            // The peer took nothing for a whole send timeout.
            (Stage::Paused, _) => self.cut_off(),
            (_, Phase::Handshake) => close(CloseReason::HandshakeTimeout),
            (Stage::Serving, Phase::Open) => {
                *self = Stage::Pinged;
                let mut actions = Actions::one(Action::Ping);
                actions.push(Action::Arm(Timeout::Pong));
                actions
            }
            (Stage::Pinged, Phase::Open) => close(CloseReason::IdleTimeout),
            (_, Phase::CloseSent | Phase::Closed) => close(CloseReason::CloseTimeout),
        }
    }

    fn on_shutdown(&mut self, facts: Facts) -> Actions {
        match facts.phase {
            _ if self.is_ending() => Actions::default(),
            Phase::Open => {
                let mut actions = Actions::one(Action::QueueClose(Goodbye::Shutdown));
                actions.push(Action::Arm(Timeout::Close));
                actions
            }
            Phase::CloseSent => Actions::default(),
            Phase::Handshake | Phase::Closed => Actions::one(Action::Close(CloseReason::Shutdown)),
        }
    }

    /// A slow consumer: 1008 queued behind its backlog (the stream must stay
    /// whole frames), then a finish like any other, bounded by the close
    /// timeout, decided once the close frame is queued.
    fn cut_off(&mut self) -> Actions {
        let mut actions = Actions::one(Action::QueueClose(Goodbye::SlowConsumer));
        actions.push(Action::Finish(CloseReason::SlowConsumer));
        actions
    }

    /// The one place that decides how a connection ends, and why. After a
    /// completed close handshake with nothing queued, or a fault that
    /// leaves nothing worth saying, it closes now. Otherwise what is queued
    /// drains first, then the write side shuts down and input drains until
    /// the peer's EOF, all bounded by the close timeout.
    fn finish(&mut self, reason: CloseReason, facts: Facts) -> Actions {
        if let Some(finishing) = self.ending() {
            // A finishing connection that reaches EOF or fails is done; it
            // is counted under the reason it was finishing for.
            return Actions::one(Action::Close(finishing));
        }
        if !is_graceful(reason) || (reason == CloseReason::Normal && facts.queued == 0) {
            return Actions::one(Action::Close(reason));
        }
        let was_paused = *self == Stage::Paused;
        *self = Stage::Draining(reason);
        let mut actions = Actions::one(Action::Arm(Timeout::Close));
        if was_paused {
            // Input waited in the socket while reads were paused; it must be
            // drained now, and no new edge may come to say so.
            actions.push(Action::ReadAgain);
        }
        if facts.queued == 0 {
            for a in self.drained(reason).iter() {
                actions.push(a);
            }
        }
        actions
    }

    /// The backlog of a finishing connection has drained: close after a
    /// close handshake, else send FIN and linger until the peer's EOF.
    fn drained(&mut self, reason: CloseReason) -> Actions {
        if reason == CloseReason::Normal {
            return Actions::one(Action::Close(reason));
        }
        *self = Stage::Lingering(reason);
        Actions::one(Action::ShutdownWrite)
    }
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::*;

    const CAP: usize = 1000;

    fn facts(phase: Phase, queued: usize) -> Facts {
        Facts { phase, queued, max_backlog: CAP, shutting_down: false }
    }

    #[test]
    fn a_normal_close_during_shutdown_counts_as_shutdown() {
        let mut s = Stage::Serving;
        let closed = Signal::Handled { before: Phase::CloseSent, after: Phase::Closed };
        let during = Facts { shutting_down: true, ..facts(Phase::Closed, 0) };
        assert_eq!(s.on(closed, during).iter().collect::<Vec<_>>(), [Close(CloseReason::Shutdown)]);
        // Other reasons stay as they are.
        let mut s = Stage::Serving;
        let gone = s.on(Signal::Eof, Facts { shutting_down: true, ..facts(Phase::Open, 0) });
        assert_eq!(gone.iter().collect::<Vec<_>>(), [Close(CloseReason::PeerGone)]);
    }

    fn run(stage: &mut Stage, signal: Signal, phase: Phase, queued: usize) -> Vec<Action> {
        stage.on(signal, facts(phase, queued)).iter().collect()
    }

    #[test]
    fn stage_is_two_bytes_and_actions_fit_a_register_pair() {
        assert!(std::mem::size_of::<Stage>() <= 2, "{}", std::mem::size_of::<Stage>());
        assert!(std::mem::size_of::<Actions>() <= 16, "{}", std::mem::size_of::<Actions>());
    }

    #[test]
    fn handshake_then_input_arms_the_idle_timer() {
        let mut s = Stage::Serving;
        let handled = Signal::Handled { before: Phase::Handshake, after: Phase::Handshake };
        assert_eq!(run(&mut s, handled, Phase::Handshake, 0), []);
        let opened = Signal::Handled { before: Phase::Handshake, after: Phase::Open };
        assert_eq!(run(&mut s, opened, Phase::Open, 0), [Arm(Timeout::Idle)]);
    }

    #[test]
    fn handshake_timeout_closes() {
        let mut s = Stage::Serving;
        assert_eq!(run(&mut s, Signal::Timer, Phase::Handshake, 0), [Close(CloseReason::HandshakeTimeout)]);
    }

    #[test]
    fn refused_handshake_drains_its_reply_then_lingers() {
        let mut s = Stage::Serving;
        let fault = Signal::Fault(CloseReason::HandshakeFailed);
        assert_eq!(run(&mut s, fault, Phase::Closed, 120), [Arm(Timeout::Close)]);
        assert_eq!(s, Stage::Draining(CloseReason::HandshakeFailed));
        assert_eq!(run(&mut s, Signal::Progress, Phase::Closed, 0), [ShutdownWrite]);
        assert_eq!(s, Stage::Lingering(CloseReason::HandshakeFailed));
        assert_eq!(run(&mut s, Signal::Eof, Phase::Closed, 0), [Close(CloseReason::HandshakeFailed)]);
    }

    #[test]
    fn peer_begins_the_close_handshake() {
        // The peer's close is echoed by the session; nothing left queued.
        let mut s = Stage::Serving;
        let closed = Signal::Handled { before: Phase::Open, after: Phase::Closed };
        assert_eq!(run(&mut s, closed, Phase::Closed, 0), [Close(CloseReason::Normal)]);
        // The echo did not fit the socket: it drains first, then closes.
        let mut s = Stage::Serving;
        assert_eq!(run(&mut s, closed, Phase::Closed, 10), [Arm(Timeout::Close)]);
        assert_eq!(run(&mut s, Signal::Progress, Phase::Closed, 0), [Close(CloseReason::Normal)]);
    }

    #[test]
    fn we_begin_the_close_handshake() {
        let mut s = Stage::Serving;
        let app_closed = Signal::Handled { before: Phase::Open, after: Phase::CloseSent };
        assert_eq!(run(&mut s, app_closed, Phase::CloseSent, 0), [Arm(Timeout::Close)]);
        let answered = Signal::Handled { before: Phase::CloseSent, after: Phase::Closed };
        assert_eq!(run(&mut s, answered, Phase::Closed, 0), [Close(CloseReason::Normal)]);
        // Or the peer never answers.
        let mut s = Stage::Serving;
        run(&mut s, app_closed, Phase::CloseSent, 0);
        assert_eq!(run(&mut s, Signal::Timer, Phase::CloseSent, 0), [Close(CloseReason::CloseTimeout)]);
    }

    #[test]
    fn protocol_error_sends_its_close_and_lingers_until_eof_or_timeout() {
        let mut s = Stage::Serving;
        let fault = Signal::Fault(CloseReason::ProtocolError);
        assert_eq!(run(&mut s, fault, Phase::Closed, 0), [Arm(Timeout::Close), ShutdownWrite]);
        assert_eq!(s, Stage::Lingering(CloseReason::ProtocolError));
        assert_eq!(run(&mut s, Signal::Timer, Phase::Closed, 0), [Close(CloseReason::ProtocolError)]);
    }

    #[test]
    fn eof_and_socket_errors_close_at_once() {
        for (signal, reason) in [
            (Signal::Eof, CloseReason::PeerGone),
            (Signal::Fault(CloseReason::IoError), CloseReason::IoError),
            (Signal::Fault(CloseReason::PeerGone), CloseReason::PeerGone),
        ] {
            let mut s = Stage::Serving;
            assert_eq!(run(&mut s, signal, Phase::Open, 500), [Close(reason)], "{signal:?}");
        }
    }

    #[test]
    fn idle_ping_then_pong() {
        let mut s = Stage::Serving;
        assert_eq!(run(&mut s, Signal::Timer, Phase::Open, 0), [Ping, Arm(Timeout::Pong)]);
        assert_eq!(s, Stage::Pinged);
        let pong = Signal::Handled { before: Phase::Open, after: Phase::Open };
        assert_eq!(run(&mut s, pong, Phase::Open, 0), [Arm(Timeout::Idle)]);
        assert_eq!(s, Stage::Serving);
    }

    #[test]
    fn idle_ping_without_an_answer_closes() {
        let mut s = Stage::Serving;
        run(&mut s, Signal::Timer, Phase::Open, 0);
        assert_eq!(run(&mut s, Signal::Timer, Phase::Open, 0), [Close(CloseReason::IdleTimeout)]);
    }

    #[test]
    fn a_reader_that_keeps_reading_is_paused_and_resumed_never_cut_off() {
        let mut s = Stage::Serving;
        let echo = Signal::Handled { before: Phase::Open, after: Phase::Open };
        assert_eq!(run(&mut s, echo, Phase::Open, 16 * CAP), [Arm(Timeout::Send)]);
        assert_eq!(s, Stage::Paused);
        // Progress above half the cap only re-arms the send deadline.
        assert_eq!(run(&mut s, Signal::Progress, Phase::Open, 3 * CAP), [Arm(Timeout::Send)]);
        assert_eq!(run(&mut s, Signal::Progress, Phase::Open, CAP / 2 + 1), [Arm(Timeout::Send)]);
        // At half, reading resumes (and must be started: no edge will come).
        assert_eq!(run(&mut s, Signal::Progress, Phase::Open, CAP / 2), [Arm(Timeout::Idle), ReadAgain]);
        assert_eq!(s, Stage::Serving);
    }

    #[test]
    fn slow_consumer_that_stops_reading_is_cut_off_after_the_send_timeout() {
        let mut s = Stage::Paused;
        assert_eq!(
            run(&mut s, Signal::Timer, Phase::Open, 5 * CAP),
            [QueueClose(Goodbye::SlowConsumer), Finish(CloseReason::SlowConsumer)]
        );
        // Once the close frame is queued: drain (reading again, to discard).
        let fault = Signal::Fault(CloseReason::SlowConsumer);
        assert_eq!(run(&mut s, fault, Phase::CloseSent, 5 * CAP), [Arm(Timeout::Close), ReadAgain]);
        assert_eq!(s, Stage::Draining(CloseReason::SlowConsumer));
        // It never drains: the close timeout ends it, counted as slow.
        assert_eq!(run(&mut s, Signal::Timer, Phase::CloseSent, 5 * CAP), [Close(CloseReason::SlowConsumer)]);
    }

    #[test]
    fn a_publish_that_leaves_the_member_over_the_cap_pauses_it_on_the_send_deadline() {
        let mut s = Stage::Pinged;
        let big = Signal::Published { earlier_unsent: 0 };
        assert_eq!(run(&mut s, big, Phase::Open, 16 * CAP), [Arm(Timeout::Send)]);
        assert_eq!(s, Stage::Paused);
        // More publishes do not extend the deadline...
        assert_eq!(run(&mut s, big, Phase::Open, 17 * CAP), []);
        // ...and a member that takes nothing for it is cut off.
        assert_eq!(
            run(&mut s, Signal::Timer, Phase::Open, 17 * CAP),
            [QueueClose(Goodbye::SlowConsumer), Finish(CloseReason::SlowConsumer)]
        );
        // One that reads down to half the cap is served again.
        let mut s = Stage::Paused;
        assert_eq!(run(&mut s, Signal::Progress, Phase::Open, CAP / 2), [Arm(Timeout::Idle), ReadAgain]);
    }

    #[test]
    fn over_budget_says_why_then_finishes_once() {
        let mut s = Stage::Serving;
        let signal = Signal::OverBudget(Goodbye::TooBig);
        assert_eq!(
            run(&mut s, signal, Phase::Open, 0),
            [QueueClose(Goodbye::TooBig), Finish(CloseReason::MemoryBudget)]
        );
        assert_eq!(Goodbye::TooBig.frame().0, 1009);
        assert_eq!(Goodbye::TryAgainLater.frame().0, 1013);
        let fault = Signal::Fault(CloseReason::MemoryBudget);
        assert_eq!(run(&mut s, fault, Phase::CloseSent, 0), [Arm(Timeout::Close), ShutdownWrite]);
        assert_eq!(run(&mut s, signal, Phase::CloseSent, 0), [], "an ending connection is told once");
    }

    #[test]
    fn a_publish_judges_the_backlog_it_found() {
        let mut s = Stage::Serving;
        let small = Signal::Published { earlier_unsent: CAP };
        assert_eq!(run(&mut s, small, Phase::Open, CAP), []);
        let over = Signal::Published { earlier_unsent: CAP + 1 };
        assert_eq!(
            run(&mut s, over, Phase::Open, 40 * CAP),
            [QueueClose(Goodbye::SlowConsumer), Finish(CloseReason::SlowConsumer)]
        );
        let fault = Signal::Fault(CloseReason::SlowConsumer);
        assert_eq!(run(&mut s, fault, Phase::CloseSent, 40 * CAP), [Arm(Timeout::Close)]);
        assert_eq!(s, Stage::Draining(CloseReason::SlowConsumer));
        // An ending connection is judged no more.
        assert_eq!(run(&mut s, over, Phase::CloseSent, 40 * CAP), []);
    }

    #[test]
    fn shutdown_by_phase() {
        let mut s = Stage::Serving;
        assert_eq!(run(&mut s, Signal::Shutdown, Phase::Open, 0), [QueueClose(Goodbye::Shutdown), Arm(Timeout::Close)]);
        assert_eq!(run(&mut s, Signal::Shutdown, Phase::CloseSent, 0), []);
        assert_eq!(run(&mut s, Signal::Shutdown, Phase::Handshake, 0), [Close(CloseReason::Shutdown)]);
        let mut ending = Stage::Lingering(CloseReason::ProtocolError);
        assert_eq!(run(&mut ending, Signal::Shutdown, Phase::Closed, 0), []);
    }

    #[test]
    fn a_finishing_connection_that_fails_keeps_its_reason() {
        let mut s = Stage::Draining(CloseReason::SlowConsumer);
        let fault = Signal::Fault(CloseReason::PeerGone);
        assert_eq!(run(&mut s, fault, Phase::CloseSent, 10), [Close(CloseReason::SlowConsumer)]);
        let mut s = Stage::Lingering(CloseReason::Shutdown);
        assert_eq!(run(&mut s, Signal::Eof, Phase::Closed, 0), [Close(CloseReason::Shutdown)]);
        // A normal finish that waited out its close timeout timed out.
        let mut s = Stage::Draining(CloseReason::Normal);
        assert_eq!(run(&mut s, Signal::Timer, Phase::Closed, 10), [Close(CloseReason::CloseTimeout)]);
    }
}

#[cfg(test)]
mod retire_tests {
    use super::Action::*;
    use super::*;

    fn facts(phase: Phase, queued: usize, shutting_down: bool) -> Facts {
        Facts { phase, queued, max_backlog: 1000, shutting_down }
    }

    #[test]
    fn an_open_connection_is_told_1012_then_lingers_under_its_reason() {
        for (reason, shutting_down) in [(CloseReason::Restart, true), (CloseReason::MaxAge, false)] {
            let mut s = Stage::Serving;
            let told: Vec<Action> = s.on(Signal::Retire(reason), facts(Phase::Open, 0, shutting_down)).iter().collect();
            assert_eq!(told, [QueueClose(Goodbye::Restart), Finish(reason)]);
            assert_eq!(Goodbye::Restart.frame().0, 1012);
            // The close frame went out at once: FIN, then wait for the EOF.
            let fault = Signal::Fault(reason);
            let finished: Vec<Action> = s.on(fault, facts(Phase::CloseSent, 0, shutting_down)).iter().collect();
            assert_eq!(finished, [Arm(Timeout::Close), ShutdownWrite]);
            assert_eq!(s, Stage::Lingering(reason));
            // The peer's echo and EOF end it, counted as it was retired
            // (not as a shutdown, not as normal).
            let eof: Vec<Action> = s.on(Signal::Eof, facts(Phase::CloseSent, 0, shutting_down)).iter().collect();
            assert_eq!(eof, [Close(reason)]);
        }
    }

    #[test]
    fn a_paused_one_is_told_behind_its_backlog_and_read_again() {
        let mut s = Stage::Paused;
        let told: Vec<Action> =
            s.on(Signal::Retire(CloseReason::MaxAge), facts(Phase::Open, 5000, false)).iter().collect();
        assert_eq!(told, [QueueClose(Goodbye::Restart), Finish(CloseReason::MaxAge)]);
        let fault = Signal::Fault(CloseReason::MaxAge);
        let finished: Vec<Action> = s.on(fault, facts(Phase::CloseSent, 5000, false)).iter().collect();
        assert_eq!(finished, [Arm(Timeout::Close), ReadAgain]);
        assert_eq!(s, Stage::Draining(CloseReason::MaxAge));
        // It never reads: the close timeout ends it, still counted as aged.
        let timer: Vec<Action> = s.on(Signal::Timer, facts(Phase::CloseSent, 5000, false)).iter().collect();
        assert_eq!(timer, [Close(CloseReason::MaxAge)]);
    }

    #[test]
    fn by_phase_and_once() {
        let retire = Signal::Retire(CloseReason::Restart);
        let mut s = Stage::Serving;
        let handshaking: Vec<Action> = s.on(retire, facts(Phase::Handshake, 0, true)).iter().collect();
        assert_eq!(handshaking, [Close(CloseReason::Restart)]);
        let mut s = Stage::Serving;
        assert_eq!(s.on(retire, facts(Phase::CloseSent, 0, true)).iter().count(), 0, "its close is under way");
        let mut s = Stage::Lingering(CloseReason::SlowConsumer);
        assert_eq!(s.on(retire, facts(Phase::CloseSent, 0, true)).iter().count(), 0, "told once, by one reason");
    }
}

#[cfg(test)]
mod cut_off_tests {
    use super::Action::*;
    use super::*;

    #[test]
    fn a_cut_off_whose_close_frame_went_out_at_once_lingers_at_once() {
        // The kernel took the whole backlog and the 1008 with it: nothing
        // is queued, so no writable edge will ever come to say so.
        let mut s = Stage::Paused;
        let facts = Facts { phase: Phase::CloseSent, queued: 0, max_backlog: 1000, shutting_down: false };
        let actions: Vec<Action> = s.on(Signal::Fault(CloseReason::SlowConsumer), facts).iter().collect();
        assert_eq!(actions, [Arm(Timeout::Close), ReadAgain, ShutdownWrite]);
        assert_eq!(s, Stage::Lingering(CloseReason::SlowConsumer));
    }
}
