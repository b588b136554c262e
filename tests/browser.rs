//! A real browser: headless Chromium (Debian's package, driven by
//! playwright-core from tests/browser/) against the binary with compression
//! on, in both modes, and JWT identities on: the page connects with its
//! token in the query (`?token=`: a browser cannot set headers on a
//! WebSocket), which allows it the room it publishes to. The page checks what it can see (the negotiated
//! extension, every echo, a room publish from another connection); this
//! test checks what only the server sees: exactly the three messages over
//! the threshold went out compressed.
//!
//! Needs node, /usr/bin/chromium and `npm install --prefix tests/browser`
//! (what .ci/run does); without them this skips, unless CI is set.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{http_get, sample, spawn_binary_with_metrics};

/// True if the browser check can run here; in CI it must.
fn browser_available() -> bool {
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let chromium = Path::new(&std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())).exists();
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core").exists();
    let ok = node && chromium && driver;
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install node, chromium and tests/browser's packages (node {node}, chromium {chromium}, \
             playwright-core {driver})"
        );
        eprintln!("browser test skipped: needs node, chromium and `npm install --prefix tests/browser`");
    }
    ok
}

fn run_page(mode: &str, expect_extension: &str) {
    let secret = "browser-test-secret-of-32-bytes-or-more";
    let key =
        std::env::temp_dir().join(format!("wsloop-browser-jwt-{}-{}", std::process::id(), mode.replace(':', "-")));
    std::fs::write(&key, secret).unwrap();
    let args = ["--compression", mode, "--jwt-key", key.to_str().unwrap()];
    let (_server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let claims = serde_json::json!({
        "sub": "chromium",
        "exp": jsonwebtoken::get_current_timestamp() + 600,
        "wsloop": {"join": ["browser"], "publish": ["browser"]},
    });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/deflate.mjs");
    let out = Command::new("timeout")
        .args(["120", "node"])
        .arg(&script)
        .arg(format!("ws://{addr}/ws?token={token}"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{mode}: the page's checks failed:\n{stdout}\n{stderr}");
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(seen["extensions"], expect_extension, "{mode}: {seen}");
    assert_eq!(seen["publish"], true);
    // Over the threshold: the large text and binary echoes and the publish;
    // under it: the small echoes and the join acks.
    let compressed = || sample(&http_get(metrics, "/metrics").1, "wsloop_compressed_messages_total");
    assert!(common::eventually(Duration::from_secs(5), || compressed() == Some(3.0)), "{mode}: {:?}", compressed());
    let body = http_get(metrics, "/metrics").1;
    assert_eq!(
        sample(&body, r#"wsloop_auth_refused_total{reason="missing"}"#),
        Some(0.0),
        "every page connection had its token"
    );
}

#[test]
fn chromium_negotiates_shared_compression_and_everything_round_trips() {
    if browser_available() {
        run_page("shared", "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    }
}

#[test]
fn chromium_keeps_a_small_window_with_dedicated_compression() {
    if browser_available() {
        run_page("dedicated:10", "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10");
    }
}
