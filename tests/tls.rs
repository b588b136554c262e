//! `wss://` through the binary: a real TLS client (rustls under tungstenite)
//! echoing, and every way a TLS client can go wrong: plain HTTP on the TLS
//! port, garbage instead of a ClientHello, a handshake that stalls, a reset
//! in the middle of a record, bad certificate files, a reload on SIGHUP with
//! connections open. Runs on the driver `WSLOOP_IO` names, like the rest.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type Wss = tungstenite::WebSocket<StreamOwned<ClientConnection, TcpStream>>;

/// A CA and two server certificates it signed (for localhost), made with
/// the openssl command line in a fresh directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("wsloop-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
        run(&["req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=wsloop test CA"]);
        std::fs::write(dir.join("leaf.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
            .unwrap();
        for leaf in ["one", "two"] {
            run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &format!("{leaf}.key")]);
            let csr = format!("{leaf}.csr");
            run(&["req", "-new", "-key", &format!("{leaf}.key"), "-out", &csr, "-subj", &format!("/CN={leaf}")]);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{leaf}.pem"),
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
            ]);
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A client that trusts the CA, offering `http/1.1`, TLS 1.3 and 1.2
    /// (or only `versions`).
    fn client(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

const BOTH: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A `wsloop` serving wss with `cert`/`key`, its stderr in a file.
struct WssServer {
    process: ServerProcess,
    addr: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
}

impl WssServer {
    fn start(pki: &Pki, cert: &Path, key: &Path, extra: &[&str]) -> WssServer {
        let log =
            pki.path(&format!("server-{}.log", std::time::SystemTime::now().elapsed().map_or(0, |d| d.as_nanos())));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsloop"));
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--workers", "2", "--metrics-addr", "127.0.0.1:0"])
            .args(["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let process = ServerProcess(cmd.spawn().expect("spawn wsloop"));
        let (mut addr, mut metrics) = (None, None);
        let up = eventually(Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for line in text.lines() {
                if let Some(rest) = line.split("listening on wss://").nth(1) {
                    addr = rest.split('/').next().and_then(|a| a.parse().ok());
                }
                if let Some(rest) = line.split("metrics on http://").nth(1) {
                    metrics = rest.split('/').next().and_then(|a| a.parse().ok());
                }
            }
            addr.is_some() && metrics.is_some()
        });
        assert!(up, "wsloop did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        WssServer { process, addr: addr.unwrap(), metrics: metrics.unwrap(), log }
    }

    fn connect(&self, client: &Arc<ClientConfig>) -> Wss {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let session = ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
        let stream = StreamOwned::new(session, tcp);
        let (ws, resp) = tungstenite::client(format!("wss://localhost:{}/ws", self.addr.port()), stream)
            .expect("a WebSocket handshake over TLS");
        assert_eq!(resp.status(), 101);
        ws
    }

    fn metric(&self, series: &str) -> f64 {
        let (_, body) = http_get(self.metrics, "/metrics");
        sample(&body, series).unwrap_or_else(|| panic!("{series} missing"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn echo(ws: &mut Wss, msg: tungstenite::Message) {
    ws.send(msg.clone()).unwrap();
    assert_eq!(ws.read().unwrap(), msg);
}

/// The ClientHello a real client opens with.
fn client_hello(client: &Arc<ClientConfig>) -> Vec<u8> {
    let mut session = ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hello = Vec::new();
    session.write_tls(&mut hello).unwrap();
    hello
}

/// Reads until the server closes (or 10 s pass); what it sent.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn echo_over_wss_on_tls_1_3_and_1_2() {
    let pki = Pki::new("echo");
    let server = WssServer::start(&pki, &pki.path("one.pem"), &pki.path("one.key"), &[]);
    for versions in [BOTH, &[&rustls::version::TLS12][..]] {
        let mut ws = server.connect(&pki.client(versions));
        let negotiated = ws.get_ref().conn.protocol_version();
        let want =
            if versions.len() == 1 { rustls::ProtocolVersion::TLSv1_2 } else { rustls::ProtocolVersion::TLSv1_3 };
        assert_eq!(negotiated, Some(want));
        assert_eq!(ws.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        echo(&mut ws, tungstenite::Message::text("hello over TLS"));
        // Larger than a TLS record (16 KiB) and a pooled buffer, both ways.
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
        echo(&mut ws, tungstenite::Message::binary(big));
        for i in 0..200 {
            echo(&mut ws, tungstenite::Message::text(format!("{i}")));
        }
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
    }
    assert!(server.metric("wsloop_tls_handshakes_total") >= 2.0);
    assert_eq!(server.metric(r#"wsloop_connections_closed_total{reason="tls_failed"}"#), 0.0);
}

#[test]
fn plain_http_and_garbage_on_the_tls_port_are_refused_and_counted() {
    let pki = Pki::new("garbage");
    let server = WssServer::start(&pki, &pki.path("one.pem"), &pki.path("one.key"), &[]);
    let client = pki.client(BOTH);
    let mut bystander = server.connect(&client);

    // A plain ws:// upgrade sent to the wss port: a readable 400 in the clear.
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .unwrap();
    let reply = String::from_utf8_lossy(&read_until_closed(&mut plain)).into_owned();
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n") && reply.contains("wss://"), "{reply}");

    // A handshake record holding a message of no known type instead of a
    // ClientHello: an alert, then the end.
    let mut garbage = TcpStream::connect(server.addr).unwrap();
    garbage.write_all(&[0x16, 0x03, 0x01, 0x00, 0x08, 0xfe, 0, 0, 4, 1, 2, 3, 4]).unwrap();
    let answer = read_until_closed(&mut garbage);
    assert_eq!(answer.first(), Some(&0x15), "a TLS alert record: {answer:?}");

    // Not even a record.
    let mut noise = TcpStream::connect(server.addr).unwrap();
    noise.write_all(&[0xff; 64]).unwrap();
    let _ = read_until_closed(&mut noise);

    echo(&mut bystander, tungstenite::Message::text("still here"));
    let failures =
        |reason: &str| server.metric(&format!(r#"wsloop_tls_handshake_failures_total{{reason="{reason}"}}"#));
    assert!(eventually(Duration::from_secs(5), || failures("plain_http") == 1.0));
    let bad = failures("malformed") + failures("protocol") + failures("other") + failures("incompatible");
    let (_, body) = http_get(server.metrics, "/metrics");
    let tls_lines: Vec<&str> = body.lines().filter(|l| l.contains("tls")).collect();
    assert_eq!(bad, 2.0, "{tls_lines:#?}");
    drop((plain, garbage, noise));
    let closed = || server.metric(r#"wsloop_connections_closed_total{reason="tls_failed"}"#);
    assert!(eventually(Duration::from_secs(5), || closed() == 3.0), "{}", closed());
}

#[test]
fn a_stalled_handshake_times_out_and_a_reset_mid_record_harms_no_one() {
    let pki = Pki::new("stall");
    let server = WssServer::start(&pki, &pki.path("one.pem"), &pki.path("one.key"), &["--handshake-timeout", "1s"]);
    let client = pki.client(BOTH);
    let mut bystander = server.connect(&client);

    // Half a ClientHello, then nothing.
    let hello = client_hello(&client);
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    let started = Instant::now();
    let _ = read_until_closed(&mut stalled);
    assert!(started.elapsed() < Duration::from_secs(8), "the handshake timeout closed it");

    // A client that opened properly, sends half a record and resets.
    let mut doomed = server.connect(&client);
    echo(&mut doomed, tungstenite::Message::text("before the reset"));
    let tcp = doomed.get_mut().get_mut();
    let mut record = Vec::new();
    {
        let mut session = ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
        session.write_tls(&mut record).unwrap();
    }
    tcp.write_all(&record[..record.len() / 2]).unwrap();
    socket2::SockRef::from(&*tcp).set_linger(Some(Duration::ZERO)).unwrap();
    drop(doomed);

    echo(&mut bystander, tungstenite::Message::text("unharmed"));
    let timeouts = || server.metric(r#"wsloop_tls_handshake_failures_total{reason="timeout"}"#);
    assert!(eventually(Duration::from_secs(5), || timeouts() == 1.0));
    let reset = || server.metric(r#"wsloop_connections_closed_total{reason="peer_gone"}"#);
    assert!(eventually(Duration::from_secs(5), || reset() == 1.0), "the reset connection is closed as gone");
    assert_eq!(server.metric(r#"wsloop_handshake_failures_total{reason="timeout"}"#), 1.0);
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_only() {
    let pki = Pki::new("reload");
    let (cert, key) = (pki.path("live.pem"), pki.path("live.key"));
    std::fs::copy(pki.path("one.pem"), &cert).unwrap();
    std::fs::copy(pki.path("one.key"), &key).unwrap();
    let server = WssServer::start(&pki, &cert, &key, &[]);
    let client = pki.client(BOTH);
    let served = |ws: &Wss| ws.get_ref().conn.peer_certificates().unwrap()[0].as_ref().to_vec();
    let one = std::fs::read(pki.path("one.pem")).unwrap();
    let two = std::fs::read(pki.path("two.pem")).unwrap();
    let der = |pem: &[u8]| CertificateDer::from_pem_slice(pem).unwrap().as_ref().to_vec();

    let mut before = server.connect(&client);
    assert_eq!(served(&before), der(&one));
    let hup = || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.process.id() as i32), nix::sys::signal::Signal::SIGHUP)
            .unwrap()
    };

    std::fs::copy(pki.path("two.pem"), &cert).unwrap();
    std::fs::copy(pki.path("two.key"), &key).unwrap();
    hup();
    assert!(eventually(Duration::from_secs(5), || server.log().contains("SIGHUP: reloaded")), "{}", server.log());
    let mut after = server.connect(&client);
    assert_eq!(served(&after), der(&two), "new handshakes use the new certificate");
    echo(&mut before, tungstenite::Message::text("the old connection goes on"));

    // A bad file is refused; the certificate in use stays.
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n").unwrap();
    hup();
    assert!(eventually(Duration::from_secs(5), || server.log().contains("SIGHUP: kept the TLS certificate in use")));
    let line = server.log().lines().find(|l| l.contains("kept the TLS")).unwrap().to_string();
    assert!(line.contains(&format!("--tls-key {}", key.display())), "{line}");
    let mut later = server.connect(&client);
    assert_eq!(served(&later), der(&two));
    echo(&mut later, tungstenite::Message::text("still served"));
    echo(&mut after, tungstenite::Message::text("and this one"));
}

#[test]
fn bad_certificate_files_stop_the_start_with_one_line_naming_them() {
    let pki = Pki::new("badfiles");
    std::fs::write(pki.path("empty.pem"), "").unwrap();
    let run = |cert: &Path, key: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["--addr", "127.0.0.1:0", "--metrics-addr", "off"])
            .args(["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    };
    let missing = run(&pki.path("nope.pem"), &pki.path("one.key"));
    assert!(missing.starts_with(&format!("wsloop: --tls-cert {}: cannot read it", pki.path("nope.pem").display())));
    let empty = run(&pki.path("empty.pem"), &pki.path("one.key"));
    assert!(empty.starts_with(&format!("wsloop: --tls-cert {}:", pki.path("empty.pem").display())), "{empty}");
    let not_a_key = run(&pki.path("one.pem"), &pki.path("one.pem"));
    assert!(not_a_key.starts_with(&format!("wsloop: --tls-key {}:", pki.path("one.pem").display())), "{not_a_key}");
    let mismatched = run(&pki.path("one.pem"), &pki.path("two.key"));
    assert!(mismatched.contains("with --tls-key") && mismatched.contains("two.key"), "{mismatched}");

    let out = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["--tls-cert", pki.path("one.pem").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--tls-key"), "{stderr}");
}

/// `wsloop load` with `args`; its exit code, stdout and stderr.
fn load(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wsloop")).arg("load").args(args).output().expect("run wsloop load");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_load_generator_speaks_wss_and_checks_the_certificate() {
    let pki = Pki::new("load");
    let server = WssServer::start(&pki, &pki.path("one.pem"), &pki.path("one.key"), &[]);
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let ca = pki.path("ca.pem");
    // Messages over a TLS record (16 KiB) each way. Few connections: in a
    // debug build the client's TLS is slow, and echoes on open connections
    // would starve the handshakes of the others past --connect-timeout.
    let base = ["--url", &url, "--scenario", "echo", "--conns", "12", "--duration", "2s", "--size", "20KiB"];
    let (code, out, err) = load(&[&base[..], &["--tls-ca", ca.to_str().unwrap(), "--connect-timeout", "60s"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("handshakes completed         12"), "{out}");
    assert!(out.contains("connections failed           0"), "{out}");
    let by_ip = format!("wss://127.0.0.1:{}/ws", server.addr.port());
    let (code, out, err) =
        load(&["--url", &by_ip, "--scenario", "ping", "--conns", "20", "--duration", "1s", "--tls-insecure"]);
    assert_eq!(code, 0, "{out}{err}");

    // A CA that did not sign the server's certificate: every connection
    // fails on it, and the run says so.
    let other = Pki::new("load-other");
    let (code, out, _) = load(&[&base[..], &["--tls-ca", other.path("ca.pem").to_str().unwrap()]].concat());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("tls_certificate"), "{out}");
    assert!(server.metric(r#"wsloop_tls_handshake_failures_total{reason="alert"}"#) >= 12.0);

    let (code, _, err) = load(&["--url", &url, "--conns", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("--tls-ca") && err.contains("--tls-insecure"), "{err}");
    let (code, _, err) = load(&["--url", "ws://127.0.0.1:9/ws", "--conns", "1", "--tls-insecure"]);
    assert_eq!(code, 2);
    assert!(err.contains("need a wss:// --url"), "{err}");
}

#[test]
fn input_held_behind_a_backlog_is_handled_once_the_peer_reads() {
    // Echoes far over the backlog cap pause the connection's reads while
    // more messages arrive; once the client reads, every one comes back.
    let pki = Pki::new("held");
    let server = WssServer::start(&pki, &pki.path("one.pem"), &pki.path("one.key"), &["--max-backlog", "64KiB"]);
    let mut ws = server.connect(&pki.client(BOTH));
    // The last message is small: when it arrives the connection is paused
    // behind the first echo, and nothing else will come to wake it.
    let mut messages: Vec<tungstenite::Message> =
        (0..3u8).map(|i| tungstenite::Message::binary(vec![i; 512 * 1024])).collect();
    messages.push(tungstenite::Message::text("the last word"));
    for m in &messages {
        ws.send(m.clone()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    for m in &messages {
        assert_eq!(&ws.read().unwrap(), m);
    }
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    assert_eq!(server.metric(r#"wsloop_connections_closed_total{reason="tls_failed"}"#), 0.0);
}
