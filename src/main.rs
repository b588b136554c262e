//! The `wsloop` binary: parse flags, pick a subcommand.

use std::process::ExitCode;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

use wsloop::app::{BuiltinApp, EchoApp, PlainEcho, TokenAuth, Tokens};
use wsloop::cli::{AdminArgs, AdminCommand, Cli, Command, DoctorArgs, MetricsAddr, ServeArgs};
use wsloop::server::handler::PublishRefusals;
use wsloop::{logging, metrics, server, tune};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Serve(args) => serve(&args),
        Command::Load(args) => wsloop::load::main(&args),
        Command::Doctor(args) => doctor(&args),
        Command::Admin(args) => admin_call(&args),
    }
}

/// `wsloop admin ...`: one call of a server's admin API; prints the JSON
/// reply; fails (1) unless it is 200.
fn admin_call(args: &AdminArgs) -> ExitCode {
    use serde_json::json;
    use wsloop::admin::client::{call, encode};
    let token = match wsloop::admin::AdminToken::load(&args.token_file) {
        Ok(token) => token,
        Err(e) => return fail(e),
    };
    let (method, path, body) = match &args.command {
        AdminCommand::Publish { room, text } => {
            let text = match message_text(text) {
                Ok(text) => text,
                Err(e) => return fail(format_args!("admin publish: cannot read the message from standard input: {e}")),
            };
            ("POST", "/publish".to_string(), Some(json!({"room": room, "text": text})))
        }
        AdminCommand::Disconnect { user, room, conn, code, reason } => {
            let mut body = json!({"code": code, "reason": reason});
            for (key, value) in [("user", user), ("room", room), ("conn", conn)] {
                if let Some(value) = value {
                    body[key] = json!(value);
                }
            }
            ("POST", "/disconnect".to_string(), Some(body))
        }
        AdminCommand::Rooms { limit, after } => {
            let mut query = Vec::new();
            query.extend(limit.map(|n| format!("limit={n}")));
            query.extend(after.as_deref().map(|a| format!("after={}", encode(a))));
            ("GET", format!("/rooms?{}", query.join("&")), None)
        }
        AdminCommand::Room { name } => ("GET", format!("/rooms/{}", encode(name)), None),
        AdminCommand::User { name } => ("GET", format!("/users/{}/connections", encode(name)), None),
    };
    match call(args.addr, &token, method, &path, body.as_ref()) {
        Ok((status, reply)) => {
            println!("{}", serde_json::to_string_pretty(&reply).unwrap_or_default());
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                eprintln!("wsloop: admin API answered {status}");
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(e),
    }
}

/// `wsloop admin publish`'s message: as given, or, for `-`, standard input
/// (a message past the kernel's bound on one argument, 128 KiB), read up to
/// the API's body bound.
fn message_text(text: &str) -> std::io::Result<String> {
    use std::io::Read;
    if text != "-" {
        return Ok(text.to_string());
    }
    let mut read = String::new();
    std::io::stdin().take(wsloop::admin::request::MAX_BODY as u64 + 1).read_to_string(&mut read)?;
    Ok(read)
}

fn doctor(args: &DoctorArgs) -> ExitCode {
    use tune::doctor::{blocking, check, render, Host, Target};
    let target = Target { conns: args.target_conns, role: args.role, processes: args.processes, sources: args.sources };
    let rows = check(&Host::at(&args.root), target);
    print!("{}", render(&rows, target));
    if args.role != tune::doctor::Role::Loadgen {
        // What the server's default --memory-limit would be here.
        print!("{}", tune::doctor::memory_budget(&Host::at(&args.root), args.processes));
    }
    // The driver `--io auto` would take on this host, and why.
    match server::driver::resolve(server::driver::IoChoice::Auto) {
        Ok((driver, why)) => println!("I/O driver (--io auto): {} ({why})", driver.label()),
        Err(e) => println!("I/O driver (--io auto): epoll ({e})"),
    }
    if blocking(&rows).is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// What the flags that name files hold, read before anything starts.
struct FlagFiles {
    tokens: Option<std::sync::Arc<Tokens>>,
    tls: Option<std::sync::Arc<server::tls::TlsCerts>>,
    admin_token: Option<wsloop::admin::AdminToken>,
    jwt: Option<std::sync::Arc<server::identity::Verifier>>,
}

/// Reads every file a flag names; the first that will not load ends the
/// process (the exit code, its line printed).
fn read_flag_files(args: &ServeArgs) -> Result<FlagFiles, ExitCode> {
    let tokens = auth_tokens(args)?;
    let tls = tls_certs(args)?;
    let admin_token =
        args.admin_token_file.as_deref().map(wsloop::admin::AdminToken::load).transpose().map_err(fail)?;
    let jwt = jwt_verifier(args)?;
    Ok(FlagFiles { tokens, tls, admin_token, jwt })
}

fn serve(args: &ServeArgs) -> ExitCode {
    remember_launch();
    logging::init(args.log_level);
    let FlagFiles { tokens, tls, admin_token, jwt } = match read_flag_files(args) {
        Ok(files) => files,
        Err(code) => return code,
    };
    let signals = match prepare_process() {
        Ok(signals) => signals,
        Err(code) => return code,
    };
    // A process offering its connections at --takeover is asked first.
    let takeover = match args.takeover.as_deref().map(server::handoff::take_over) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(takeover))) => Some(takeover),
        Some(Err(e)) => return fail(format_args!("cannot take over: {e}")),
    };
    // The publishes the echo app refuses, counted by every loop's instance.
    let refusals = std::sync::Arc::new(PublishRefusals::default());
    let took_over = takeover.is_some();
    let handle = match start_server(args, tokens, &tls, &jwt, &refusals, takeover) {
        Ok(handle) => handle,
        Err(code) => return code,
    };
    let _sidecars = match serve_sidecars(args, &handle, refusals, jwt.clone(), admin_token, took_over) {
        Ok(sidecars) => sidecars,
        Err(code) => {
            handle.shutdown();
            let _ = handle.join();
            return code;
        }
    };
    if let Some(line) = tune::doctor::one_line(&tune::doctor::Host::live(), handle.max_conns() as u64) {
        log::warn!("{line}");
    }
    let _offer = match offer_handoff(args, &handle, took_over) {
        Ok(offer) => offer,
        // ... nor for want of a hand-off socket for the next deploy.
        Err(_) if took_over => None,
        Err(code) => {
            handle.shutdown();
            let _ = handle.join();
            return code;
        }
    };
    spawn_signal_thread(signals, handle.trigger(), Reloadable { tls, jwt }, args);
    match handle.join() {
        Ok(()) => {
            log::info!("shut down cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Says why `wsloop serve` cannot go on; the exit code to end with.
fn fail(why: impl std::fmt::Display) -> ExitCode {
    eprintln!("wsloop: {why}");
    ExitCode::FAILURE
}

/// The tokens upgrades must present, when `--auth-token-file` is given;
/// a file that will not load ends the process (the exit code).
fn auth_tokens(args: &ServeArgs) -> Result<Option<std::sync::Arc<Tokens>>, ExitCode> {
    let Some(path) = &args.auth_token_file else { return Ok(None) };
    match Tokens::load(path) {
        Ok(tokens) => {
            log::info!("upgrades must present a token from {}", path.display());
            Ok(Some(std::sync::Arc::new(tokens)))
        }
        Err(e) => Err(fail(e)),
    }
}

/// The certificate and key of `--tls-cert` and `--tls-key`, when both are
/// given; files that will not load end the process (the exit code).
fn tls_certs(args: &ServeArgs) -> Result<Option<std::sync::Arc<server::tls::TlsCerts>>, ExitCode> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else { return Ok(None) };
    match server::tls::TlsCerts::load(cert, key) {
        Ok(certs) => Ok(Some(std::sync::Arc::new(certs))),
        Err(e) => Err(fail(e)),
    }
}

/// The token verifier of `--jwt-key`, when given; a key file that will not
/// load ends the process (the exit code).
fn jwt_verifier(args: &ServeArgs) -> Result<Option<std::sync::Arc<server::identity::Verifier>>, ExitCode> {
    let Some(config) = args.jwt_config() else { return Ok(None) };
    let path = config.key_file.clone();
    match server::identity::Verifier::load(config) {
        Ok(verifier) => {
            log::info!("upgrades must present a JWT signed with a key in {}", path.display());
            Ok(Some(std::sync::Arc::new(verifier)))
        }
        Err(e) => Err(fail(e)),
    }
}

/// Sets the process up while it has one thread: large buffers mapped on
/// their own, the stop and reload signals blocked (returned, for the
/// signal thread to wait on), the open-file limit raised.
fn prepare_process() -> Result<SigSet, ExitCode> {
    // Buffers of a megabyte and more (a large message, read, corked or
    // queued) are mapped on their own and go back to the system when freed,
    // rather than glibc's threshold drifting up and keeping them resident.
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread starts.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    // Block SIGINT/SIGTERM/SIGHUP before any thread starts, so every thread inherits
    // the mask and only the signal thread (`spawn_signal_thread`) receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.add(Signal::SIGUSR2);
    if let Err(e) = signals.thread_block() {
        return Err(fail(format_args!("cannot block signals: {e}")));
    }
    match tune::rlimit::raise_nofile() {
        Ok((soft, hard)) => log::info!(
            "open-file limit {soft} (hard {hard}): room for about {} connections in this process",
            (soft as usize).saturating_sub(server::FD_RESERVE)
        ),
        Err(e) => log::warn!("cannot read or raise the open-file limit: {e}"),
    }
    Ok(signals)
}

/// Starts the event loops serving `--app` behind the token check (the
/// echo app under the publish flags, counting its refusals in
/// `refusals`), and logs where they listen; a server that cannot start
/// ends the process (the exit code).
fn start_server(
    args: &ServeArgs,
    tokens: Option<std::sync::Arc<Tokens>>,
    tls: &Option<std::sync::Arc<server::tls::TlsCerts>>,
    jwt: &Option<std::sync::Arc<server::identity::Verifier>>,
    refusals: &std::sync::Arc<PublishRefusals>,
    takeover: Option<server::handoff::Takeover>,
) -> Result<server::ServerHandle, ExitCode> {
    let mut cfg = args.to_config();
    cfg.tls = tls.clone();
    cfg.jwt = jwt.clone();
    cfg.check().map_err(fail)?;
    let workers = cfg.worker_count();
    let (policy, refusals) = (args.publish_policy(), refusals.clone());
    let handle = match args.app {
        BuiltinApp::Echo => launch(
            cfg,
            move |_| TokenAuth::new(tokens.clone(), EchoApp::with_policy(policy, refusals.clone())),
            takeover,
            args,
        )?,
        BuiltinApp::PlainEcho => launch(cfg, move |_| TokenAuth::new(tokens.clone(), PlainEcho), takeover, args)?,
    };
    log::info!(
        "listening on {}://{}{} with {workers} event loops, max {} connections, app {}",
        if tls.is_some() { "wss" } else { "ws" },
        handle.local_addr(),
        args.paths.first().map_or("/", String::as_str),
        handle.max_conns(),
        args.app.name()
    );
    if args.app == BuiltinApp::Echo {
        log::info!(
            "clients may publish up to {} bytes of data; client broadcasts {}",
            policy.max_size,
            if policy.allow_broadcast { "on (--allow-broadcast)" } else { "off" }
        );
    }
    Ok(handle)
}

/// Starts the server: a first start binds its listeners; with a process
/// to take over from, the server takes its listeners and connections.
fn launch<H, F>(
    cfg: server::ServerConfig,
    factory: F,
    takeover: Option<server::handoff::Takeover>,
    args: &ServeArgs,
) -> Result<server::ServerHandle, ExitCode>
where
    H: server::Handler + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let Some(takeover) = takeover else {
        return match server::start(cfg, factory) {
            Ok(h) => Ok(h),
            // The I/O driver asked for cannot run here (`--io uring`).
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => Err(fail(e)),
            Err(e) => Err(fail(format_args!("cannot listen on {}: {e}", args.addr))),
        };
    };
    let from = takeover.hello().addr;
    if from != args.addr && args.addr.port() != 0 {
        log::warn!("taking over the listeners on {from}, not --addr {}", args.addr);
    }
    let started = std::time::Instant::now();
    match server::start_taking_over(cfg, factory, takeover) {
        Ok((handle, adopted)) => {
            log::info!("took over {adopted} connections and the listeners on {from} in {:?}", started.elapsed());
            notify_systemd(&format!("MAINPID={}\nREADY=1", std::process::id()));
            Ok(handle)
        }
        Err(e) => Err(fail(format_args!("cannot take over: {e}"))),
    }
}

/// Offers this process's connections at `--takeover`, once it serves.
/// A process that `took_over` replaces the socket of the one it took
/// over from (which may still be draining what could not move).
fn offer_handoff(
    args: &ServeArgs,
    handle: &server::ServerHandle,
    took_over: bool,
) -> Result<Option<server::handoff::Offer>, ExitCode> {
    let Some(path) = &args.takeover else {
        notify_systemd("READY=1");
        return Ok(None);
    };
    match handle.offer_handoff(path, took_over) {
        Ok(offer) => {
            log::info!("offering a live hand-off on {} (SIGUSR2 starts the new binary)", path.display());
            notify_systemd("READY=1");
            Ok(Some(offer))
        }
        Err(e) if took_over => {
            log::error!("serving what was taken over, but no hand-off for the next deploy: {e}");
            Err(ExitCode::FAILURE)
        }
        Err(e) => Err(fail(e)),
    }
}

/// Tells systemd (a `Type=notify` unit, `NOTIFY_SOCKET` set) `state`:
/// `READY=1` once serving; a process that took over also says it is the
/// service's main process now. Nothing without `NOTIFY_SOCKET`.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(sock) => sock,
        Err(e) => return log::warn!("cannot tell systemd {state:?}: {e}"),
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), std::path::Path::new(&path)),
    };
    if let Err(e) = sent {
        log::warn!("cannot tell systemd {state:?}: {e}");
    }
}

/// SIGUSR2: starts the binary at this process's path (a deploy has
/// replaced it) with this process's flags, to take its connections over
/// through `--takeover`. If it fails, this process serves on; its exit is
/// logged.
fn start_successor(args: &ServeArgs) {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Set while a successor runs: a second SIGUSR2 starts no second one.
    static RUNNING: AtomicBool = AtomicBool::new(false);
    if args.takeover.is_none() {
        return log::warn!("SIGUSR2: no --takeover socket: nothing to hand over to (restart instead)");
    }
    if RUNNING.swap(true, Ordering::AcqRel) {
        return log::warn!("SIGUSR2: a new process is already taking over; ignored");
    }
    let exe = successor_path();
    let child = std::process::Command::new(&exe).args(std::env::args_os().skip(1)).spawn();
    match child {
        Ok(mut child) => {
            log::info!("SIGUSR2: started {} (pid {}) to take over", exe.display(), child.id());
            std::thread::spawn(move || {
                match child.wait() {
                    Ok(status) => log::warn!("the new process exited ({status}); this one serves on"),
                    Err(e) => log::warn!("the new process could not be waited for: {e}"),
                }
                RUNNING.store(false, Ordering::Release);
            });
        }
        Err(e) => {
            RUNNING.store(false, Ordering::Release);
            log::warn!("SIGUSR2: cannot start {}: {e}; serving on", exe.display());
        }
    }
}

/// How this process was started: `argv[0]` and the directory it was
/// started in, kept at start (a deploy may change what they lead to; that
/// is the point).
static LAUNCHED: std::sync::OnceLock<(std::ffi::OsString, std::path::PathBuf)> = std::sync::OnceLock::new();

/// Remembers how this process was started, for [`successor_path`].
fn remember_launch() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_default();
    let _ = LAUNCHED.set((argv0, cwd));
}

/// The binary a deploy put where this one was started from: `argv[0]`
/// resolved now (a path against the start directory, so a symlink switched
/// to a new release leads to it; a bare name through `PATH`), or, if that
/// is gone, `/proc/self/exe`'s path less the kernel's " (deleted)".
fn successor_path() -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    if let Some((argv0, cwd)) = LAUNCHED.get() {
        let path = std::path::Path::new(argv0);
        if !argv0.as_bytes().contains(&b'/') {
            return path.to_owned();
        }
        let full = cwd.join(path);
        if full.exists() {
            return full;
        }
    }
    let target = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    match target.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
        Some(kept) => std::path::PathBuf::from(std::ffi::OsStr::from_bytes(kept)),
        None => target,
    }
}

/// Serves `/metrics` when `--metrics-addr` asks for it. If it cannot, says
/// why and gives the exit code; the caller stops the server.
fn serve_metrics(
    addr: MetricsAddr,
    handle: &server::ServerHandle,
    refusals: std::sync::Arc<PublishRefusals>,
    jwt: Option<std::sync::Arc<server::identity::Verifier>>,
    admin: Option<std::sync::Arc<metrics::admin::AdminStats>>,
) -> Result<Option<metrics::MetricsHandle>, ExitCode> {
    let MetricsAddr::On(addr) = addr else { return Ok(None) };
    let mut source = metrics::Source::of(handle).with_publish_refusals(refusals).with_jwt(jwt);
    if let Some(admin) = admin {
        source = source.with_admin(admin);
    }
    let probe = handle.trigger();
    match metrics::start(addr, source, move || !probe.is_shutting_down()) {
        Ok(m) => {
            log::info!("metrics on http://{}/metrics", m.local_addr());
            Ok(Some(m))
        }
        Err(e) => Err(fail(format_args!("cannot serve metrics on {addr}: {e}"))),
    }
}

/// The metrics port and the admin API, each when asked for. If one
/// cannot start, says why and gives the exit code (the caller stops the
/// server), unless this process took connections over: they are never
/// dropped for want of either.
fn serve_sidecars(
    args: &ServeArgs,
    handle: &server::ServerHandle,
    refusals: std::sync::Arc<PublishRefusals>,
    jwt: Option<std::sync::Arc<server::identity::Verifier>>,
    admin_token: Option<wsloop::admin::AdminToken>,
    took_over: bool,
) -> Result<(Option<metrics::MetricsHandle>, Option<wsloop::admin::AdminHandle>), ExitCode> {
    let admin_stats = std::sync::Arc::new(metrics::admin::AdminStats::default());
    let counted = args.admin_addr.map(|_| admin_stats.clone());
    let metrics = match serve_metrics(args.metrics_addr, handle, refusals, jwt, counted) {
        Ok(metrics) => metrics,
        Err(_) if took_over => None,
        Err(code) => return Err(code),
    };
    let taken = metrics.as_ref().map(|m| m.local_addr());
    let admin = match serve_admin(args.admin_addr.zip(admin_token), handle, taken, admin_stats) {
        Ok(admin) => admin,
        Err(_) if took_over => None,
        Err(code) => return Err(code),
    };
    Ok((metrics, admin))
}

/// Serves the admin API when `--admin-addr` asks for it (with its token).
/// If it cannot, says why and gives the exit code; the caller stops the server.
fn serve_admin(
    at: Option<(std::net::SocketAddr, wsloop::admin::AdminToken)>,
    handle: &server::ServerHandle,
    metrics: Option<std::net::SocketAddr>,
    stats: std::sync::Arc<metrics::admin::AdminStats>,
) -> Result<Option<wsloop::admin::AdminHandle>, ExitCode> {
    let Some((addr, token)) = at else { return Ok(None) };
    // All three listen with SO_REUSEPORT (a hand-off's new process binds
    // while the old one serves), so a port shared with either other would
    // have the kernel split connections between them.
    let public = handle.local_addr();
    if addr.port() == public.port() {
        return Err(fail(format_args!(
            "--admin-addr {addr} is on the public port (--addr {public}): the admin API needs its own"
        )));
    }
    if let Some(metrics) = metrics.filter(|m| m.port() == addr.port()) {
        return Err(fail(format_args!(
            "--admin-addr {addr} is on the metrics port (--metrics-addr {metrics}): the admin API needs its own"
        )));
    }
    match wsloop::admin::start(addr, token, handle.admin(), stats) {
        Ok(admin) => {
            log::info!("admin API on http://{}", admin.local_addr());
            Ok(Some(admin))
        }
        Err(e) => Err(fail(format_args!("cannot serve the admin API on {addr}: {e}"))),
    }
}

/// What SIGHUP reloads: the TLS certificate and key, the JWT keys.
struct Reloadable {
    tls: Option<std::sync::Arc<server::tls::TlsCerts>>,
    jwt: Option<std::sync::Arc<server::identity::Verifier>>,
}

/// Starts the thread that takes the blocked `signals`: SIGHUP reloads the
/// TLS certificate and the JWT keys, SIGUSR2 starts a successor to hand over to (`--takeover`),
/// the first SIGINT or SIGTERM begins a graceful shutdown
/// (up to `--shutdown-timeout`), a second one exits at once.
fn spawn_signal_thread(signals: SigSet, trigger: server::ShutdownTrigger, reloadable: Reloadable, args: &ServeArgs) {
    let timeout = args.shutdown_timeout;
    let args = args.clone();
    std::thread::Builder::new()
        .name("wsloop-signals".into())
        .spawn(move || {
            let mut asked_to_stop = false;
            while let Ok(sig) = signals.wait() {
                match sig {
                    Signal::SIGHUP => reloadable.reload(),
                    Signal::SIGUSR2 => start_successor(&args),
                    _ if !asked_to_stop => {
                        asked_to_stop = true;
                        log::info!("{sig}: shutting down (closing connections, up to {timeout:?}); again to exit now");
                        trigger.shutdown();
                    }
                    _ => {
                        log::warn!("{sig} again: exiting now");
                        std::process::exit(130);
                    }
                }
            }
        })
        .expect("spawn the signal thread");
}

impl Reloadable {
    /// SIGHUP: reloads the TLS certificate and key for new handshakes, and
    /// the JWT keys for new upgrades and refreshes; what is in use stays
    /// when a new file will not load.
    fn reload(&self) {
        if let Some(certs) = &self.tls {
            match certs.reload() {
                Ok(()) => log::info!("SIGHUP: reloaded the TLS certificate and key; new handshakes use them"),
                Err(e) => log::warn!("SIGHUP: kept the TLS certificate in use: {e}"),
            }
        }
        if let Some(jwt) = &self.jwt {
            match jwt.reload() {
                Ok(n) => log::info!("SIGHUP: reloaded the JWT key file ({n} keys); new upgrades use them"),
                Err(e) => log::warn!("SIGHUP: kept the JWT keys in use: {e}"),
            }
        }
        if self.tls.is_none() && self.jwt.is_none() {
            log::info!("SIGHUP: nothing to reload (no --tls-cert, no --jwt-key)");
        }
    }
}
