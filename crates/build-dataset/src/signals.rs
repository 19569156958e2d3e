//! Graceful stop: the first SIGINT or SIGTERM stops taking new work, lets requests in flight
//! finish (bounded by a grace period) and commits the open shard; a second signal, or the end of
//! the grace period, exits at once. Either way nothing committed is lost: items not yet in a
//! durable shard are still pending in the journal and the next run does them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Exit code after an immediate stop (128 + SIGINT, as shells report it).
const EXIT_NOW: i32 = 130;

/// Watches for SIGINT and SIGTERM on the current tokio runtime.
pub fn stop_on_signals(stop: Arc<AtomicBool>, grace: Duration) {
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            if !next_signal().await {
                return;
            }
            signals += 1;
            if signals == 1 {
                tracing::warn!(
                    "stop requested: taking no new items, finishing those in flight (at most {} s) and committing the open shard; signal again to stop at once",
                    grace.as_secs()
                );
                stop.store(true, Ordering::Relaxed);
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    tracing::error!(
                        "grace period over: stopping now; uncommitted items are redone by the next run"
                    );
                    std::process::exit(EXIT_NOW);
                });
            } else {
                tracing::error!(
                    "second stop signal: stopping now; uncommitted items are redone by the next run"
                );
                std::process::exit(EXIT_NOW);
            }
        }
    });
}

#[cfg(unix)]
async fn next_signal() -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return false;
    };
    tokio::select! {
        got = interrupt.recv() => got.is_some(),
        got = terminate.recv() => got.is_some(),
    }
}

#[cfg(not(unix))]
async fn next_signal() -> bool {
    tokio::signal::ctrl_c().await.is_ok()
}
