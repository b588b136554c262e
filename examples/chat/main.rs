//! A chat server on wsloop's public API (the handler is in
//! app.rs). Run it, then connect with any WebSocket client:
//!
//! ```sh
//! cargo run --release --example chat -- 127.0.0.1:9000
//! ```
//!
//! With a JWT key file as the second argument (an HMAC secret, a PEM public
//! key or a JWKS, as `wsloop --jwt-key` reads it), every client needs a
//! token (`?token=...` from a browser), and its name is the token's `sub`:
//!
//! ```sh
//! cargo run --release --example chat -- 127.0.0.1:9000 chat-secret.txt
//! ```

mod app;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wsloop::server::identity::{JwtConfig, Verifier};
use wsloop::server::{self, ServerConfig};

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".into());
    let addr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chat: '{addr}' is not an address (host:port): {e}");
            std::process::exit(2);
        }
    };
    let jwt = std::env::args().nth(2).map(|key_file| {
        let config =
            JwtConfig { key_file: key_file.into(), audience: vec![], issuer: vec![], leeway: Duration::from_secs(30) };
        match Verifier::load(config) {
            Ok(verifier) => Arc::new(verifier),
            Err(e) => {
                eprintln!("chat: {e}");
                std::process::exit(2);
            }
        }
    });
    let members = Arc::new(Mutex::new(app::Members::default()));
    let cfg = ServerConfig { addr, jwt, ..ServerConfig::default() };
    // One handler per event loop, all sharing the member list.
    let server = match server::start(cfg, move |_loop| app::ChatApp::new(members.clone())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chat: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("chat on ws://{}/ws", server.local_addr());
    if let Err(e) = server.join() {
        eprintln!("chat: {e}");
        std::process::exit(1);
    }
}
