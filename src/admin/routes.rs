//! What each admin route means: JSON in, the engine's [`AdminPort`]
//! called, JSON out. Every error is an [`ApiError`]: a status, a stable
//! code and a message, answered as `{"error":CODE,"message":...}`.

use std::sync::atomic::Ordering::Relaxed;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::metrics::admin::AdminStats;
use crate::server::admin::{AdminPort, Done, Payload, Reach};
use crate::server::{Kick, Target};

use super::request::{percent_decode, query_value};
use base64::Engine as _;

/// Rooms or connections listed when no `?limit=` is given.
pub const DEFAULT_LIMIT: usize = 1000;
/// The largest `?limit=`: a reply stays bounded.
pub const MAX_LIMIT: usize = 10_000;

/// A request the API refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// A stable code for programs (`bad_json`, `not_found`, ...).
    pub code: &'static str,
    /// What was wrong, for people.
    pub message: String,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    /// The reply's body.
    pub fn body(&self) -> Value {
        json!({"error": self.code, "message": self.message})
    }
}

/// The API's routes; the index is the `route` label's (`metrics::admin::ROUTES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /publish`
    Publish,
    /// `POST /disconnect`
    Disconnect,
    /// `GET /rooms`
    Rooms,
    /// `GET /rooms/NAME`
    Room(String),
    /// `GET /users/NAME/connections`
    UserConns(String),
}

impl Route {
    /// The route a path names (404 for none, 400 for a bad escape).
    pub fn of(path: &str) -> Result<Route, ApiError> {
        let decode =
            |s: &str| percent_decode(s).ok_or_else(|| ApiError::new(400, "bad_path", "bad %-escape in the path"));
        match path {
            "/publish" => Ok(Route::Publish),
            "/disconnect" => Ok(Route::Disconnect),
            "/rooms" => Ok(Route::Rooms),
            _ => match path.strip_prefix("/rooms/") {
                Some(name) if !name.is_empty() => Ok(Route::Room(decode(name)?)),
                _ => match path.strip_prefix("/users/").and_then(|p| p.strip_suffix("/connections")) {
                    Some(name) if !name.is_empty() => Ok(Route::UserConns(decode(name)?)),
                    _ => Err(ApiError::new(404, "not_found", "no such route (see the README, Admin API)")),
                },
            },
        }
    }

    /// Its index among `metrics::admin::ROUTES`.
    pub fn index(&self) -> usize {
        match self {
            Route::Publish => 0,
            Route::Disconnect => 1,
            Route::Rooms => 2,
            Route::Room(_) => 3,
            Route::UserConns(_) => 4,
        }
    }

    /// The one method it answers.
    pub fn method(&self) -> &'static str {
        match self {
            Route::Publish | Route::Disconnect => "POST",
            Route::Rooms | Route::Room(_) | Route::UserConns(_) => "GET",
        }
    }

    /// Answers the route: the JSON reply, or why not.
    pub fn call(&self, query: &str, body: &[u8], port: &AdminPort, stats: &AdminStats) -> Result<Value, ApiError> {
        match self {
            Route::Publish => publish(parse(body)?, port, stats),
            Route::Disconnect => disconnect(parse(body)?, port, stats),
            Route::Rooms => {
                let list = port.rooms(query_value(query, "after").map(text).transpose()?.as_deref(), limit(query)?);
                let next = list.rooms.last().filter(|_| list.more).map(|(name, _)| name.to_string());
                let rooms: Vec<Value> = list.rooms.iter().map(|(r, n)| json!({"room": &**r, "members": n})).collect();
                answered(json!({"rooms": rooms, "more": list.more, "next_after": next}), list.reach)
            }
            Route::Room(name) => {
                let l = port.room(name, limit(query)?);
                let conns: Vec<String> = l.conns.iter().map(|&(a, b, c)| format!("{a}:{b}:{c}")).collect();
                answered(json!({"room": name, "members": l.count, "connections": conns, "more": l.more}), l.reach)
            }
            Route::UserConns(name) => {
                let l = port.user(name, limit(query)?);
                let conns: Vec<String> = l.conns.iter().map(|&(a, b, c)| format!("{a}:{b}:{c}")).collect();
                answered(json!({"user": name, "count": l.count, "connections": conns, "more": l.more}), l.reach)
            }
        }
    }
}

fn text(v: Option<String>) -> Result<String, ApiError> {
    v.ok_or_else(|| ApiError::new(400, "bad_query", "bad %-escape in the query"))
}

/// `?limit=` (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
fn limit(query: &str) -> Result<usize, ApiError> {
    let Some(value) = query_value(query, "limit") else { return Ok(DEFAULT_LIMIT) };
    match text(value)?.parse::<usize>() {
        Ok(n) if n <= MAX_LIMIT => Ok(n),
        _ => Err(ApiError::new(400, "bad_limit", format!("limit must be a number from 0 to {MAX_LIMIT}"))),
    }
}

/// The JSON body as `T`, or 400 with serde's message.
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(400, "bad_json", e.to_string()))
}

/// Adds who answered; 503 when no loop did, or when one was frozen for a
/// live hand-off (it did nothing: its connections may be moving, so a
/// count or a kick there would be wrong; the caller retries).
fn answered(reply: Value, reach: Reach) -> Result<Value, ApiError> {
    if reach.frozen > 0 {
        return Err(ApiError::new(503, "handoff", "handoff in progress, retry"));
    }
    reached(reply, reach)
}

/// Adds who answered, and how many were frozen (a publish is delivered
/// by a frozen loop: not refused, since a retry would repeat it where it
/// was delivered); 503 when no loop answered.
fn reached(mut reply: Value, reach: Reach) -> Result<Value, ApiError> {
    if reach.answered == 0 && reach.loops > 0 {
        return Err(ApiError::new(503, "no_answer", "the event loops did not answer in time (shutting down?)"));
    }
    reply["loops_answered"] = json!(reach.answered);
    reply["loops"] = json!(reach.loops);
    reply["loops_frozen"] = json!(reach.frozen);
    Ok(reply)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    room: String,
    text: Option<String>,
    binary_base64: Option<String>,
}

fn publish(body: PublishBody, port: &AdminPort, stats: &AdminStats) -> Result<Value, ApiError> {
    let binary;
    let payload = match (&body.text, &body.binary_base64) {
        (Some(text), None) => Payload::Text(text),
        (None, Some(encoded)) => {
            let standard = base64::engine::general_purpose::STANDARD;
            binary = standard.decode(encoded).map_err(|e| ApiError::new(400, "bad_base64", e.to_string()))?;
            Payload::Binary(&binary)
        }
        _ => return Err(ApiError::new(400, "bad_message", "give exactly one of \"text\" and \"binary_base64\"")),
    };
    let done = port
        .publish(&body.room, payload)
        .map_err(|e| ApiError::new(400, e.label(), format!("room {:?}: {e}", body.room)))?;
    stats.delivered.fetch_add(done.local, Relaxed);
    reached(
        json!({"room": body.room, "delivered_local": done.local, "sent_to_other_hosts": done.to_other_hosts}),
        done.reach,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    conn: Option<String>,
    room: Option<String>,
    user: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
}

fn disconnect(body: DisconnectBody, port: &AdminPort, stats: &AdminStats) -> Result<Value, ApiError> {
    let target = match (body.conn, body.room, body.user) {
        (Some(conn), None, None) => conn_target(&conn)?,
        (None, Some(room), None) => Target::Room(room.into()),
        (None, None, Some(user)) => Target::User(user.into()),
        _ => return Err(ApiError::new(400, "bad_target", "give exactly one of \"conn\", \"room\" and \"user\"")),
    };
    let kick = Kick::new(target, body.code.unwrap_or(1000), body.reason.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(400, "bad_close", e.to_string()))?;
    let Done { local, to_other_hosts, reach } = port.kick(&kick);
    stats.disconnected.fetch_add(local, Relaxed);
    answered(json!({"closed_local": local, "sent_to_other_hosts": to_other_hosts}), reach)
}

/// A connection id as the API shows it: `loop:slot:generation`.
fn conn_target(id: &str) -> Result<Target, ApiError> {
    let parts: Vec<Option<u32>> = id.split(':').map(|p| p.parse().ok()).collect();
    match parts[..] {
        [Some(loop_id), Some(slot), Some(generation)] => Ok(Target::Conn { loop_id, slot, generation }),
        _ => Err(ApiError::new(400, "bad_conn", format!("{id:?} is not a connection id (loop:slot:generation)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_routes() {
        assert_eq!(Route::of("/publish"), Ok(Route::Publish));
        assert_eq!(Route::of("/rooms/a%3Ab"), Ok(Route::Room("a:b".into())));
        assert_eq!(Route::of("/users/al%20ice/connections"), Ok(Route::UserConns("al ice".into())));
        for missing in ["/", "/rooms/", "/users//connections", "/users/x", "/publish/", "/metrics"] {
            assert_eq!(Route::of(missing).unwrap_err().status, 404, "{missing}");
        }
        assert_eq!(Route::of("/rooms/%zz").unwrap_err().status, 400);
    }

    #[test]
    fn limits_and_ids_are_checked() {
        assert_eq!(limit(""), Ok(DEFAULT_LIMIT));
        assert_eq!(limit("limit=5"), Ok(5));
        for bad in ["limit=", "limit=-1", "limit=10001", "limit=x"] {
            assert_eq!(limit(bad).unwrap_err().status, 400, "{bad}");
        }
        assert_eq!(conn_target("1:2:3"), Ok(Target::Conn { loop_id: 1, slot: 2, generation: 3 }));
        for bad in ["1:2", "1:2:3:4", "a:b:c", "", "1:2:-3"] {
            assert_eq!(conn_target(bad).unwrap_err().code, "bad_conn", "{bad}");
        }
    }

    #[test]
    fn a_frozen_loop_makes_kicks_and_listings_503_but_not_publishes() {
        let reach = |answered, frozen| Reach { answered, loops: 2, frozen };
        let e = answered(json!({}), reach(2, 1)).unwrap_err();
        assert_eq!((e.status, e.code, e.message.as_str()), (503, "handoff", "handoff in progress, retry"));
        assert_eq!(answered(json!({}), reach(0, 0)).unwrap_err().code, "no_answer");
        assert_eq!(answered(json!({}), reach(1, 0)).unwrap()["loops_answered"], 1);
        assert_eq!(reached(json!({}), reach(2, 2)).unwrap()["loops_frozen"], 2);
    }

    #[test]
    fn bodies_are_checked_before_anything_is_done() {
        let e = parse::<PublishBody>(b"{\"room\":").err().unwrap();
        assert_eq!((e.status, e.code), (400, "bad_json"));
        assert!(parse::<PublishBody>(b"{\"room\":\"r\",\"txt\":\"typo\"}").is_err(), "unknown fields are refused");
        assert!(parse::<DisconnectBody>(b"{\"room\":\"r\",\"code\":70000}").is_err());
    }
}
