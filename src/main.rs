//! The `wsloop` binary: parse flags, pick a subcommand.

use std::process::ExitCode;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

use wsloop::app::{BuiltinApp, EchoApp, PlainEcho, TokenAuth, Tokens};
use wsloop::cli::{Cli, Command, DoctorArgs, MetricsAddr, ServeArgs};
use wsloop::{logging, metrics, server, tune};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(&args),
        Command::Load(args) => wsloop::load::main(&args),
        Command::Doctor(args) => doctor(&args),
    }
}

fn doctor(args: &DoctorArgs) -> ExitCode {
    use tune::doctor::{blocking, check, render, Host, Target};
    let target = Target { conns: args.target_conns, role: args.role, processes: args.processes, sources: args.sources };
    let rows = check(&Host::at(&args.root), target);
    print!("{}", render(&rows, target));
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

fn serve(args: &ServeArgs) -> ExitCode {
    logging::init(args.log_level);
    // Flags that name files are checked before anything starts.
    let tokens = match &args.auth_token_file {
        None => None,
        Some(path) => match Tokens::load(path) {
            Ok(tokens) => {
                log::info!("upgrades must present a token from {}", path.display());
                Some(std::sync::Arc::new(tokens))
            }
            Err(e) => {
                eprintln!("wsloop: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match server::tls::TlsCerts::load(cert, key) {
            Ok(certs) => Some(std::sync::Arc::new(certs)),
            Err(e) => {
                eprintln!("wsloop: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    // Buffers of a megabyte and more (a large message, read, corked or
    // queued) are mapped on their own and go back to the system when freed,
    // rather than glibc's threshold drifting up and keeping them resident.
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread starts.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    // Block SIGINT/SIGTERM/SIGHUP before any thread starts, so every thread inherits
    // the mask and only the signal thread below receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    if let Err(e) = signals.thread_block() {
        eprintln!("wsloop: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    match tune::rlimit::raise_nofile() {
        Ok((soft, hard)) => log::info!(
            "open-file limit {soft} (hard {hard}): room for about {} connections in this process",
            (soft as usize).saturating_sub(server::FD_RESERVE)
        ),
        Err(e) => log::warn!("cannot read or raise the open-file limit: {e}"),
    }
    let mut cfg = args.to_config();
    cfg.tls = tls.clone();
    let workers = cfg.worker_count();
    let started = match args.app {
        BuiltinApp::Echo => server::start(cfg, move |_| TokenAuth::new(tokens.clone(), EchoApp::new())),
        BuiltinApp::PlainEcho => server::start(cfg, move |_| TokenAuth::new(tokens.clone(), PlainEcho)),
    };
    let handle = match started {
        Ok(h) => h,
        // The I/O driver asked for cannot run here (`--io uring`).
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            eprintln!("wsloop: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("wsloop: cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "listening on {}://{}{} with {workers} event loops, max {} connections, app {}",
        if tls.is_some() { "wss" } else { "ws" },
        handle.local_addr(),
        args.paths.first().map_or("/", String::as_str),
        handle.max_conns(),
        args.app.name()
    );
    let _metrics = match args.metrics_addr {
        MetricsAddr::Off => None,
        MetricsAddr::On(addr) => {
            let source = metrics::Source::of(&handle);
            let probe = handle.trigger();
            match metrics::start(addr, source, move || !probe.is_shutting_down()) {
                Ok(m) => {
                    log::info!("metrics on http://{}/metrics", m.local_addr());
                    Some(m)
                }
                Err(e) => {
                    eprintln!("wsloop: cannot serve metrics on {addr}: {e}");
                    handle.shutdown();
                    let _ = handle.join();
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    if let Some(line) = tune::doctor::one_line(&tune::doctor::Host::live(), handle.max_conns() as u64) {
        log::warn!("{line}");
    }
    let trigger = handle.trigger();
    let timeout = args.shutdown_timeout;
    std::thread::Builder::new()
        .name("wsloop-signals".into())
        .spawn(move || {
            let mut asked_to_stop = false;
            while let Ok(sig) = signals.wait() {
                match sig {
                    Signal::SIGHUP => match &tls {
                        Some(certs) => match certs.reload() {
                            Ok(()) => {
                                log::info!("SIGHUP: reloaded the TLS certificate and key; new handshakes use them")
                            }
                            Err(e) => log::warn!("SIGHUP: kept the TLS certificate in use: {e}"),
                        },
                        None => log::info!("SIGHUP: nothing to reload (no --tls-cert)"),
                    },
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
