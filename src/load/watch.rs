//! The server's view during a run: a thread scrapes every `--metrics-url`
//! once a second and keeps the latest view, which the once-a-second
//! progress reads without waiting on a scrape.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::scrape::{MetricsUrl, Scraper, ServerView};

/// The latest view of the servers, and the thread that refreshes it
/// (none without URLs).
pub(super) struct Watch {
    latest: Arc<Mutex<Option<ServerView>>>,
    running: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Starts scraping `urls` (if any), from `baseline` as the latest view.
    pub(super) fn start(urls: &[MetricsUrl], baseline: Option<ServerView>) -> Watch {
        let latest = Arc::new(Mutex::new(baseline));
        let running = Arc::new(AtomicBool::new(true));
        let thread = (!urls.is_empty()).then(|| {
            let (latest, running, mut scraper) = (latest.clone(), running.clone(), Scraper::new(urls.to_vec()));
            std::thread::spawn(move || {
                while running.load(Ordering::Relaxed) {
                    let round = Instant::now();
                    if let Some(v) = scraper.round() {
                        *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
                    }
                    std::thread::sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
                }
            })
        });
        Watch { latest, running, thread }
    }

    /// The latest view (the baseline until a scrape succeeds).
    pub(super) fn latest(&self) -> Option<ServerView> {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the thread, after its current round.
    pub(super) fn stop(self) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(t) = self.thread {
            let _ = t.join();
        }
    }
}
